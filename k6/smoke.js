// Smoke: a few requests over every route, one at a time. Proves the sample answers and the scrape adds up.
// k6 run k6/smoke.js   (BASE_URL, VUS)
import { ROUTES, VUS, before, iteration, summary, thresholds, verifyNothingLost } from './lib/common.js';

export const options = {
  scenarios: {
    smoke: { executor: 'shared-iterations', vus: Math.min(VUS, 2), iterations: 60, maxDuration: '1m' },
  },
  thresholds: thresholds({ http_req_duration: ['p(95)<500', 'p(99)<1000'] }),
};

export function setup() {
  return before();
}

export default function () {
  iteration(ROUTES);
}

/** @param {{ counts: Record<string, number> }} data */
export function teardown(data) {
  verifyNothingLost(data, ROUTES);
}

/** @param {any} data */
export function handleSummary(data) {
  return summary('smoke', data);
}
