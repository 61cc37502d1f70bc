// Create -> poll -> download one video through mediagate with the official Node `openai` SDK,
// as a team's Node code would. Prints one JSON line: what the SDK saw.
//
//   node videos.mjs [BASE_URL] [API_KEY] [MODEL] [REFERENCE_IMAGE]
//
// Each argument falls back to MEDIAGATE_BASE_URL (e.g. http://127.0.0.1:8000/v1),
// MEDIAGATE_API_KEY, MEDIAGATE_MODEL (default sora-2), MEDIAGATE_REFERENCE (a PNG/JPEG/WebP
// path sent as `input_reference`; optional). Optional: MEDIAGATE_SIZE, MEDIAGATE_SECONDS,
// MEDIAGATE_EXTRA (a JSON object of extra body fields, e.g. Muse's style_preset, sent as the
// SDK sends any field it has no type for).
//
// The Node SDK has no `videos.createAndPoll` (the Python one has `create_and_poll`); when a
// version adds it, it is used, else the same loop is written here: retrieve until terminal,
// waiting what the server's `openai-poll-after-ms` header asks.
import fs from "node:fs";
import path from "node:path";
import OpenAI, { toFile } from "openai";

const [argBase, argKey, argModel, argReference] = process.argv.slice(2);
const baseURL = argBase ?? process.env.MEDIAGATE_BASE_URL;
const apiKey = argKey ?? process.env.MEDIAGATE_API_KEY;
const model = argModel ?? process.env.MEDIAGATE_MODEL ?? "sora-2";
const reference = argReference ?? process.env.MEDIAGATE_REFERENCE;
if (!baseURL || !apiKey) {
  console.error("usage: node videos.mjs BASE_URL API_KEY [MODEL] [REFERENCE_IMAGE]");
  process.exit(2);
}

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
const deadline = Date.now() + Number(process.env.MEDIAGATE_POLL_TIMEOUT_MS ?? 120_000);

const params = { model, prompt: "a paper boat on a pond" };
if (process.env.MEDIAGATE_SIZE) params.size = process.env.MEDIAGATE_SIZE;
if (process.env.MEDIAGATE_SECONDS) params.seconds = process.env.MEDIAGATE_SECONDS;
if (process.env.MEDIAGATE_EXTRA) Object.assign(params, JSON.parse(process.env.MEDIAGATE_EXTRA));
if (reference) {
  params.input_reference = await toFile(fs.createReadStream(reference), path.basename(reference));
}

async function createAndPoll(body) {
  if (typeof client.videos.createAndPoll === "function") {
    return { video: await client.videos.createAndPoll(body), polls: null };
  }
  let video = await client.videos.create(body);
  let polls = 0;
  while (video.status === "queued" || video.status === "in_progress") {
    if (Date.now() > deadline) throw new Error(`video ${video.id} still ${video.status}`);
    const { data, response } = await client.videos.retrieve(video.id).withResponse();
    const waitMs = Number(response.headers.get("openai-poll-after-ms") ?? 1000);
    video = data;
    polls += 1;
    if (video.status === "queued" || video.status === "in_progress") {
      await new Promise((resolve) => setTimeout(resolve, Math.min(Math.max(waitMs, 10), 5000)));
    }
  }
  return { video, polls };
}

const { video, polls } = await createAndPoll(params);
const result = {
  id: video.id,
  status: video.status,
  model: video.model,
  seconds: video.seconds,
  size: video.size,
  polls,
  error: video.error ?? null,
};
if (video.status === "completed") {
  const content = await client.videos.downloadContent(video.id);
  const bytes = Buffer.from(await content.arrayBuffer());
  result.bytes = bytes.length;
  result.content_type = content.headers.get("content-type");
  result.mp4 = bytes.subarray(4, 8).toString("latin1") === "ftyp";
}
console.log(JSON.stringify(result));
process.exit(video.status === "completed" ? 0 : 1);
