"""Issue 4 checks: `bitnet inspect --ln-stats`, gates, policy files, the gamma rescale and
strict mode, against figures computed here independently of the engine."""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_read import GGUF  # noqa: E402

BITNET = os.environ['BITNET']
failures = 0


def check(cond, what):
    global failures
    print(('ok   ' if cond else 'FAIL ') + what)
    if not cond:
        failures += 1


def run(*args, env=None):
    e = dict(os.environ)
    e.pop('BITNET_STRICT_MODE', None)
    e.pop('BITNET_RESCALE_GAMMA_ON_LOAD', None)
    if env:
        e.update(env)
    p = subprocess.run([BITNET] + list(args), capture_output=True, text=True, env=e)
    return p.returncode, p.stdout, p.stderr


def norm_names(g):
    return [n for n in g.order if n.endswith('norm.weight')]


def stats(vals):
    n = len(vals)
    rms = math.sqrt(sum(v * v for v in vals) / n)
    return rms, sum(vals) / n, min(vals), max(vals)


tmp = tempfile.mkdtemp(prefix='bitnet-lnstats.')
hidden = 256
gamma = 1 / math.sqrt(hidden)
model = os.path.join(tmp, 'lowgamma.gguf')
rc, _, err = run('mkmodel', '--preset', 'tiny', '--seed', '21', '--gamma-rms', repr(gamma),
                 '--out', model)
assert rc == 0, err
g = GGUF(model)

# 1. Exact figures for every norm tensor.
rc, out, err = run('inspect', '--ln-stats', '--json', model)
check(rc == 0, 'inspect --ln-stats exits 0 on a model within the BitNet rules')
rep = json.loads(out)
check(rep['ruleset'] == 'builtin:bitnet-i2_s', 'bitnet-b1.58 I2_S file gets the BitNet rule set')
by = {t['tensor']: t for t in rep['tensors']}
check(sorted(by) == sorted(norm_names(g)), 'every norm tensor is listed')
worst = 0.0
for name in norm_names(g):
    vals = g.f32(name)
    rms, mean, mn, mx = stats(vals)
    t = by[name]
    for key, want in (('rms', rms), ('mean', mean), ('min', mn), ('max', mx),
                      ('rms_ratio', rms * math.sqrt(len(vals)))):
        worst = max(worst, abs(t[key] - want) / max(abs(want), 1e-30))
    check(t['length'] == len(vals), '%s length %d' % (name, len(vals)))
check(worst < 1e-9, 'RMS/mean/min/max/ratio equal the independent figures (worst rel %.1e)' % worst)
check(all(abs(by[n]['rms'] - gamma) / gamma < 1e-6 for n in by if '.attn_norm' in n),
      'attn_norm RMS is the requested 1/sqrt(hidden)')

# 2. Gates: a policy that the low attn_norm fails.
pol = os.path.join(tmp, 'policy.ini')
with open(pol, 'w') as f:
    f.write('[attn]\npattern = blk.*.attn_norm.weight\nmin = 0.5\nmax = 2.0\n'
            '[rest]\npattern = *\nmin = 0.1\nmax = 10\n')
rc, out, err = run('inspect', '--ln-stats', '--policy', pol, '--gate', 'none', model)
check(rc == 0 and 'low' in out, '--gate none prints the verdicts and exits 0')
rc, out, err = run('inspect', '--ln-stats', '--policy', pol, '--gate', 'warn', model)
check(rc == 0 and 'attn_norm' in err, '--gate warn reports on stderr and exits 0')
rc, out, err = run('inspect', '--ln-stats', '--policy', pol, '--gate', 'strict', '--json', model)
check(rc == 8, '--gate strict exits 8 when a tensor is out of range (got %d)' % rc)
rep = json.loads(out)
low = sorted(t['tensor'] for t in rep['tensors'] if t['verdict'] == 'low')
check(low == sorted(n for n in norm_names(g) if '.attn_norm' in n),
      'exactly the attn_norm tensors are tagged low')
rc, out, err = run('inspect', '--ln-stats', '--gate', 'strict', model)
check(rc == 0, 'built-in BitNet rules accept the low attn_norm (it is how the model was trained)')
with open(pol, 'w') as f:
    f.write('[attn]\npattern = *\nmin = 3\nmax = 1\n')
rc, out, err = run('inspect', '--ln-stats', '--policy', pol, model)
check(rc != 0 and 'min' in err, 'a bad policy file is an error naming the key')

# 3. Generic rules for other files; golden models report no corrections by default.
shared = os.environ.get('TEST_DATA', '')
for f in ('tiny-i2_s.gguf', 'tiny-tq2_0.gguf', 'small-lowgamma-i2_s.gguf'):
    p = os.path.join(shared, 'golden', f)
    if os.path.exists(p):
        rc, out, err = run('inspect', '--json', p)
        check(rc == 0 and json.loads(out)['corrections'] == [], '%s: no corrections by default' % f)
tq = os.path.join(tmp, 'tq.gguf')
run('mkmodel', '--preset', 'tiny', '--seed', '21', '--type', 'tq2_0', '--out', tq)
rc, out, err = run('inspect', '--ln-stats', '--json', tq)
check(json.loads(out)['ruleset'] == 'builtin:generic', 'a TQ2_0 file gets the generic rule set')

# 4. The rescale: exactly the tagged tensors, by exactly sqrt(length).
rc, out, err = run('inspect', '--json', '--rescale-gamma', model)
corr = json.loads(out)['corrections']
want = [n for n in norm_names(g) if 0.5 <= stats(g.f32(n))[0] * math.sqrt(len(g.f32(n))) <= 2.0]
check(sorted(c['tensor'] for c in corr) == sorted(want),
      'rescale touches exactly the tensors with RMS within 2x of 1/sqrt(n) (%d)' % len(want))
check(all(abs(c['factor'] - math.sqrt(hidden)) < 1e-4 for c in corr), 'factor is sqrt(length)')
check('rescale_gamma' in err and 'warning' in err, 'each change is logged at warning level')
rc2, out2, _ = run('inspect', '--json', model, env={'BITNET_RESCALE_GAMMA_ON_LOAD': '1'})
check(json.loads(out2)['corrections'] == corr, 'BITNET_RESCALE_GAMMA_ON_LOAD=1 does the same')

# Logits change accordingly: the rescaled engine equals the engine on a file whose tagged
# norms were multiplied by sqrtf(n) here.
edited = os.path.join(tmp, 'edited.gguf')
buf = bytearray(g.buf)
for n in want:
    vals = g.f32(n)
    f = struct.unpack('<f', struct.pack('<f', math.sqrt(len(vals))))[0]
    scaled = [struct.unpack('<f', struct.pack('<f', v * f))[0] for v in vals]
    struct.pack_into('<%df' % len(vals), buf, g.f32_offset(n), *scaled)
with open(edited, 'wb') as fh:
    fh.write(buf)
toks = '508,1,2,3,100,200,300'
la, lb, lc = (os.path.join(tmp, x) for x in ('a.bin', 'b.bin', 'c.bin'))
run('logits', '--model', model, '--tokens', toks, '--out', la)
rc, _, err = run('logits', '--model', model, '--tokens', toks, '--rescale-gamma', '--out', lb)
run('logits', '--model', edited, '--tokens', toks, '--out', lc)
a, b, c = (open(x, 'rb').read() for x in (la, lb, lc))
check(rc == 0 and a != b, 'the rescale changes the logits')
check(b == c, 'rescaled logits equal those of a file with the norms multiplied independently')

# 5. Strict mode refuses the correction, by flag and by environment.
rc, out, err = run('logits', '--model', model, '--tokens', toks, '--rescale-gamma', '--strict',
                   '--out', lb)
check(rc != 0 and 'rescale_gamma' in err and 'strict' in err,
      'strict mode refuses a requested rescale with an error naming the option')
rc, out, err = run('run', '--model', model, '--tokens', toks, '--max-tokens', '1', '--json',
                   env={'BITNET_STRICT_MODE': '1', 'BITNET_RESCALE_GAMMA_ON_LOAD': '1'})
check(rc != 0 and 'rescale_gamma' in err, 'BITNET_STRICT_MODE=1 refuses it too')
rc, out, err = run('run', '--model', model, '--tokens', toks, '--max-tokens', '1', '--json',
                   '--rescale-gamma', '--greedy')
rec = json.loads(out.strip().splitlines()[-1])
check(len(rec['corrections']) == len(want), 'bitnet run --json lists the corrections')

print('%d failed' % failures)
sys.exit(1 if failures else 0)
