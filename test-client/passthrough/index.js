// The soak's control: the same churn through a Worker that does nothing but forward.
// BACKEND_HTTP is the backend's base URL, BACKEND_TOKEN its bearer token.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const headers = new Headers(request.headers);
    headers.set("Authorization", `Bearer ${env.BACKEND_TOKEN}`);
    return fetch(env.BACKEND_HTTP + url.pathname, {
      method: request.method,
      headers,
      body: request.body,
    });
  },
};
