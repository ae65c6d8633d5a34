// Shared by every script: configuration, the route table, scraping /metrics, and the "nothing lost" verification.
// Written for k6 v0.49 (no newer APIs); type-checked with @types/k6@0.49 (see package.json, tsconfig.json).
import http from 'k6/http';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';

/** Where the sample listens (`dotnet run --project samples/WebApi`). */
export const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:5080';
/** Iterations per second for the arrival-rate scripts. */
export const RATE = parseInt(__ENV.RATE || '200', 10);
/** Test length, as a k6 duration string. */
export const DURATION = __ENV.DURATION || '30s';
/** Pre-allocated virtual users. */
export const VUS = parseInt(__ENV.VUS || '50', 10);

/** Requests sent, tagged by route template and expected status: what the server's scrape must show. */
export const sent = new Counter('percpu_sent');

// Intended 4xx/5xx answers are not failures: http_req_failed counts only unexpected statuses and transport errors.
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 399 }, 400, 404, 500));

/**
 * @typedef {{ name: string, method: string, path: (i: number) => string, route: string, status: number, body?: string, weight: number }} Route
 */

/** @type {Route[]} The sample's routes: route template and status are what PerCpu labels the series with. */
export const ROUTES = [
  { name: 'fast', method: 'GET', path: (i) => `/items/${i % 1000}`, route: '/items/{id:int}', status: 200, weight: 12 },
  { name: 'slow', method: 'GET', path: () => `/slow?ms=${__ENV.SLOW_MS || '50'}`, route: '/slow', status: 200, weight: 2 },
  { name: 'notfound', method: 'GET', path: (i) => `/missing/${i}`, route: '/missing/{id}', status: 404, weight: 3 },
  { name: 'error', method: 'GET', path: () => '/error', route: '/error', status: 500, weight: 1 },
  { name: 'create', method: 'POST', path: () => '/items', route: '/items', status: 201, body: '{"id":1,"name":"k6"}', weight: 2 },
];

/**
 * The route of global iteration `i` for a weighted mix: deterministic, so teardown can recompute what was sent.
 * @param {number} i
 * @param {Route[]} routes
 * @returns {Route}
 */
export function routeOf(i, routes) {
  const total = routes.reduce((s, r) => s + r.weight, 0);
  let slot = i % total;
  for (const r of routes) {
    if (slot < r.weight) {
      return r;
    }
    slot -= r.weight;
  }
  return routes[0];
}

/**
 * One iteration: one request, chosen by the global iteration number, counted and checked.
 * @param {Route[]} routes
 */
export function iteration(routes) {
  const i = exec.scenario.iterationInTest;
  const r = routeOf(i, routes);
  const params = { headers: { 'Content-Type': 'application/json' }, tags: { name: r.route } };
  const res = r.method === 'POST' ? http.post(BASE_URL + r.path(i), r.body || '', params) : http.get(BASE_URL + r.path(i), params);
  sent.add(1, { route: r.route, status: String(r.status) });
  check(res, { [`${r.method} ${r.route} answers ${r.status}`]: (x) => x.status === r.status });
}

/**
 * Request counts per "METHOD route status" from the scrape (sum of http_server_request_duration_seconds_count).
 * @returns {Record<string, number>}
 */
export function scrapeCounts() {
  const res = http.get(`${BASE_URL}/metrics`, { tags: { name: 'scrape' } });
  if (res.status !== 200 || typeof res.body !== 'string') {
    throw new Error(`scrape of ${BASE_URL}/metrics failed: ${res.status}`);
  }
  /** @type {Record<string, number>} */
  const counts = {};
  for (const line of res.body.split('\n')) {
    if (!line.startsWith('http_server_request_duration_seconds_count{')) {
      continue;
    }
    const labels = line.substring(line.indexOf('{') + 1, line.lastIndexOf('}'));
    const value = parseFloat(line.substring(line.lastIndexOf(' ') + 1));
    const label = (/** @type {string} */ name) => {
      const m = new RegExp(`${name}="((?:[^"\\\\]|\\\\.)*)"`).exec(labels);
      return m ? m[1] : '';
    };
    const key = `${label('http_request_method')} ${label('http_route')} ${label('http_response_status_code')}`;
    counts[key] = (counts[key] || 0) + value;
  }
  return counts;
}

/** setup(): the server must be up; returns the counts before the test. */
export function before() {
  return { counts: scrapeCounts() };
}

/**
 * Iterations this run completed, from k6's own REST API (`k6 run --address`, default localhost:6565): on k6 v0.49,
 * `exec.instance` is not available in teardown(). The count is read until two reads 200 ms apart agree, so samples
 * still on their way to the engine are included.
 * @returns {number}
 */
export function completedIterations() {
  const api = (__ENV.K6_API || 'http://localhost:6565').replace(/\/$/, '');
  let last = -1;
  for (let attempt = 0; attempt < 25; attempt++) {
    const res = http.get(`${api}/v1/metrics/iterations`, { tags: { name: 'k6-api' } });
    if (res.status !== 200) {
      throw new Error(`k6's REST API at ${api} answered ${res.status}: run k6 with its API on (the default), or set K6_API to its address`);
    }
    const count = Number(res.json('data.attributes.sample.count'));
    if (count === last) {
      return count;
    }
    last = count;
    sleep(0.2);
  }
  return last;
}

/**
 * teardown(): the increase of every series must equal what this run sent. Iterations are numbered 0..N-1 across the
 * run (exec.scenario.iterationInTest) and each sends exactly one request, so the sent mix is recomputed exactly
 * from N, the completed iterations. A missing count, or an extra one, fails a check.
 * @param {{ counts: Record<string, number> }} data
 * @param {Route[]} routes
 */
export function verifyNothingLost(data, routes) {
  const completed = completedIterations();
  const after = scrapeCounts();
  /** @type {Record<string, number>} */
  const expected = {};
  for (let i = 0; i < completed; i++) {
    const r = routeOf(i, routes);
    const key = `${r.method} ${r.route} ${r.status}`;
    expected[key] = (expected[key] || 0) + 1;
  }
  for (const key of Object.keys(expected)) {
    const delta = (after[key] || 0) - (data.counts[key] || 0);
    const name = `nothing lost: ${key} increased by ${expected[key]} (saw ${delta})`;
    if (!check(delta, { [name]: (d) => d === expected[key] })) {
      console.error(`FAILED ${name}`);
    }
  }
  console.log(`nothing-lost check: ${completed} iterations, ${Object.keys(expected).length} series compared`);
}

/**
 * The thresholds every script shares; `extra` adds the script's own latency budget.
 * @param {Record<string, string[]>} extra
 * @returns {Record<string, string[]>}
 */
export function thresholds(extra) {
  return Object.assign({
    checks: ['rate==1.0'],
    http_req_failed: ['rate<0.01'],
  }, extra);
}

/**
 * handleSummary(): the JSON summary to a file, and a short line to stdout.
 * @param {string} script
 * @param {any} data
 */
export function summary(script, data) {
  const checks = data.metrics.checks ? data.metrics.checks.values : { passes: 0, fails: 0 };
  const reqs = data.metrics.http_reqs ? data.metrics.http_reqs.values.count : 0;
  // Relative to the directory k6 runs in (the repository root or k6/ alike); SUMMARY_DIR overrides it.
  const dir = __ENV.SUMMARY_DIR ? `${__ENV.SUMMARY_DIR.replace(/\/$/, '')}/` : '';
  return {
    [`${dir}summary-${script}.json`]: JSON.stringify(data, null, 2),
    stdout: `${script}: ${reqs} requests, checks ${checks.passes} passed / ${checks.fails} failed\n`,
  };
}

/**
 * The lifecycle every script exports: setup() scrapes, teardown() verifies nothing was lost for `routes`, and
 * handleSummary() writes the JSON summary. Scripts re-export these as their own named exports.
 * @param {string} script
 * @param {Route[]} routes
 */
export function lifecycle(script, routes) {
  return {
    setup: before,
    /** @param {{ counts: Record<string, number> }} data */
    teardown: (data) => verifyNothingLost(data, routes),
    /** @param {any} data */
    handleSummary: (data) => summary(script, data),
  };
}
