// Drives bitnetd's HTTP front door with the official openai client (node, openai@4).
// usage: node http-openai.js BASE_URL API_KEY
const OpenAI = require("openai");
const [base, key] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: key });
(async () => {
	const models = await client.models.list();
	if (!models.data.length) throw new Error("no models");
	const model = models.data[0].id;
	const c = await client.completions.create({ model, prompt: "one two three", max_tokens: 8, temperature: 0 });
	if (c.usage.completion_tokens !== 8 || typeof c.choices[0].text !== "string") throw new Error("completion " + JSON.stringify(c));
	const stream = await client.chat.completions.create({
		model, messages: [{ role: "user", content: "hello" }], max_tokens: 12, temperature: 0, stream: true,
	});
	let text = "", chunks = 0, finish = null;
	for await (const ch of stream) {
		chunks++;
		text += ch.choices[0]?.delta?.content ?? "";
		finish = ch.choices[0]?.finish_reason ?? finish;
	}
	if (!chunks || finish !== "length") throw new Error(`stream: ${chunks} chunks, finish ${finish}`);
	try {
		await client.completions.create({ model, prompt: "x", max_tokens: 1, temperature: 50000 });
		throw new Error("a bad temperature was accepted");
	} catch (e) {
		if (!(e instanceof OpenAI.BadRequestError)) throw e;
	}
	console.log(`openai client: model ${model}, completion ${JSON.stringify(c.choices[0].text)}, ` +
		`streamed chat ${chunks} chunks ${JSON.stringify(text)}`);
})().catch((e) => { console.error(String(e)); process.exit(1); });
