"""The chat format bitnetd uses for bitnet-b1.58 models, as token ids.

lib/chat.c (BN_CHAT_BITNET) renders a conversation as

    <|begin_of_text|>User: {u1}<|eot_id|>Assistant: {a1}<|eot_id|>User: {u2}<|eot_id|>Assistant: 

and bn_chat_tokenize turns the template's own special tokens into their ids
and tokenizes every text run between them as plain text (no BOS of its own:
the rendered <|begin_of_text|> is the BOS).  The runs are therefore
"User: {u}", "Assistant: {a}" for an earlier answer, and the final
"Assistant: " (which ends in a lone space token); the answer the model
generates follows that space as its own run.  The model is trained to end an
answer with <|eot_id|>, an end-of-generation token for the engine (EOS or
EOT), so that generation stops there.

A previous answer comes back (bitnetctl chat, the D-Bus Chat call) as the
text the daemon streamed, which is the answer without <|eot_id|>.
"""

USER = "User: "
ASSISTANT = "Assistant: "


def runs(history, question):
    """The prompt as a list of ("special", name) and ("text", str) parts.
    history: list of (user, answer); question: the last user message."""
    out = [("special", "bos")]
    for u, a in history:
        out += [("text", USER + u), ("special", "eot"), ("text", ASSISTANT + a), ("special", "eot")]
    out += [("text", USER + question), ("special", "eot"), ("text", ASSISTANT)]
    return out


def prompt_ids(tok, history, question):
    ids = []
    for kind, v in runs(history, question):
        if kind == "special":
            ids.append(tok.bos if v == "bos" else tok.eot)
        else:
            ids += tok.encode(v, add_bos=False)
    return ids


def doc_ids(tok, turns):
    """A training conversation (a list of (user, answer)): the prompt for the last
    answer, that answer as plain text, and <|eot_id|>."""
    hist = [(t[0], t[1]) for t in turns[:-1]]
    return (prompt_ids(tok, hist, turns[-1][0]) + tok.encode(turns[-1][1], add_bos=False)
            + [tok.eot])


def texts(turns):
    """The text runs of a conversation, for training the BPE."""
    hist = [(t[0], t[1]) for t in turns[:-1]]
    return [v for k, v in runs(hist, turns[-1][0]) if k == "text"] + [turns[-1][1]]
