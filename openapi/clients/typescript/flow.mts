// The client openapi-typescript + openapi-fetch make from openapi/openapi.json, driving the flow
// against a live server and checking every answer (openapi/clients/check type-checks it with
// tsc --strict, then runs it).
// Usage: node flow.mjs BASE_URL API_KEY   (schema.d.ts generated beside it)
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type ErrorBody = components["schemas"]["ErrorBody"];

const [baseUrl, key] = process.argv.slice(2);
if (!baseUrl || !key) throw new Error("usage: node flow.mjs BASE_URL API_KEY");

// The key is configured once, as the spec's ApiKey security scheme says.
const api = createClient<paths>({ baseUrl, headers: { "X-Api-Key": key } });
const wrong = createClient<paths>({ baseUrl, headers: { "X-Api-Key": "wrong" } });

function check(condition: boolean, what: string, seen: unknown): void {
  if (!condition) throw new Error(`${what}: got ${JSON.stringify(seen)}`);
}

function expectError(error: ErrorBody | undefined, status: number, wanted: number, code: string): void {
  check(status === wanted && error?.error === code, `${wanted} ${code}`, { status, error });
}

const registered = await api.POST("/register", { body: { name: "ts-alice" } });
const alice = registered.data;
check(registered.response.status === 201 && alice?.name === "ts-alice", "register", registered.data);
if (!alice) throw new Error("unreachable");

const taken = await api.POST("/register", { body: { name: "ts-alice" } });
expectError(taken.error, taken.response.status, 409, "name_taken");
const refused = await wrong.POST("/register", { body: { name: "ts-bob" } });
expectError(refused.error, refused.response.status, 403, "forbidden");
check(refused.error?.message === "invalid API key", "403 message", refused.error);

const topic = await api.POST("/topics", { body: { name: "ts-topic" } });
check(topic.response.status === 201 && topic.data?.subscribers === 0, "create topic", topic.data);
const subscribed = await api.POST("/subscribe", { body: { id: alice.id, topics: ["ts-topic"] } });
check(subscribed.response.status === 202, "subscribe", subscribed.error);

const published = await api.POST("/topics/{name}/publish", {
  params: { path: { name: "ts-topic" } },
  body: { id: alice.id, message: { n: 1 } },
});
check(published.data?.recipients === 1 && published.data.offset === 1, "publish", published.data);
const kept = await api.GET("/topics/{name}/history", {
  params: { path: { name: "ts-topic" }, query: { since: 0, epoch: published.data?.epoch } },
});
check(kept.data?.complete === true && kept.data.messages.length === 1, "history", kept.data);
const missing = await api.POST("/topics/{name}/publish", {
  params: { path: { name: "nope" } },
  body: { message: 1 },
});
expectError(missing.error, missing.response.status, 404, "topic_not_found");
const broadcast = await api.POST("/broadcast", { body: { message: null } });
check((broadcast.data?.recipients ?? 0) >= 1, "broadcast", broadcast.data);

const topics = await api.GET("/topics");
const listed = new Map((topics.data ?? []).map((t) => [t.name, t.subscribers]));
check(listed.get("ts-topic") === 1, "list topics", topics.data);
const stats = await api.GET("/stats");
check(typeof stats.data?.connections === "number", "stats", stats.data);

const gone = await api.DELETE("/register/{id}", { params: { path: { id: alice.id } } });
check(gone.data?.id === alice.id && gone.data.closed_connections === 0, "unregister", gone.data);
const again = await api.DELETE("/register/{id}", { params: { path: { id: alice.id } } });
expectError(again.error, again.response.status, 409, "unknown_client");
console.log("typescript client: register, 409, 403, create topic, subscribe, publish, history, 404, broadcast, list topics, stats, unregister: all as expected");
