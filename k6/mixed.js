// Mixed: fast, slow, 4xx, throwing and parameterized routes in set proportions (12:2:3:1:2, see lib/common.js).
// k6 run -e RATE=200 -e DURATION=1m -e VUS=100 -e SLOW_MS=50 k6/mixed.js
import { DURATION, RATE, ROUTES, VUS, iteration, lifecycle, thresholds } from './lib/common.js';

export const options = {
  scenarios: {
    mixed: { executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: DURATION, preAllocatedVUs: VUS, maxVUs: VUS * 4 },
  },
  thresholds: thresholds({
    http_req_duration: ['p(95)<250', 'p(99)<500'],
    'http_req_duration{name:/items/{id:int}}': ['p(99)<100'],
  }),
};

const hooks = lifecycle('mixed', ROUTES);
export const setup = hooks.setup;
export const teardown = hooks.teardown;
export const handleSummary = hooks.handleSummary;

export default function () {
  iteration(ROUTES);
}
