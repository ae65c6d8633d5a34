// Smoke: a few requests over every route, one at a time. Proves the sample answers and the scrape adds up.
// k6 run k6/smoke.js   (BASE_URL, VUS)
import { ROUTES, VUS, iteration, lifecycle, thresholds } from './lib/common.js';

export const options = {
  scenarios: {
    smoke: { executor: 'shared-iterations', vus: Math.min(VUS, 2), iterations: 60, maxDuration: '1m' },
  },
  thresholds: thresholds({ http_req_duration: ['p(95)<500', 'p(99)<1000'] }),
};

const hooks = lifecycle('smoke', ROUTES);
export const setup = hooks.setup;
export const teardown = hooks.teardown;
export const handleSummary = hooks.handleSummary;

export default function () {
  iteration(ROUTES);
}
