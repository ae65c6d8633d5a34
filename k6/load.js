// Load: a constant arrival rate on the fast and parameterized routes, the steady state of a busy service.
// k6 run -e RATE=500 -e DURATION=2m -e VUS=100 k6/load.js
import { DURATION, RATE, ROUTES, VUS, iteration, lifecycle, thresholds } from './lib/common.js';

const MIX = ROUTES.filter((r) => r.name === 'fast' || r.name === 'notfound');

export const options = {
  scenarios: {
    load: { executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: DURATION, preAllocatedVUs: VUS, maxVUs: VUS * 4 },
  },
  thresholds: thresholds({ http_req_duration: ['p(95)<100', 'p(99)<250'] }),
};

const hooks = lifecycle('load', MIX);
export const setup = hooks.setup;
export const teardown = hooks.teardown;
export const handleSummary = hooks.handleSummary;

export default function () {
  iteration(MIX);
}
