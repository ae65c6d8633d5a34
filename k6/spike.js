// Spike: ramp the arrival rate from a trickle to 10x RATE and back, to see the metrics keep up under a burst.
// k6 run -e RATE=300 -e DURATION=20s -e VUS=200 k6/spike.js
import { DURATION, RATE, ROUTES, VUS, iteration, lifecycle, thresholds } from './lib/common.js';

const MIX = ROUTES.filter((r) => r.name === 'fast' || r.name === 'notfound');

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: Math.max(1, Math.floor(RATE / 10)),
      timeUnit: '1s',
      preAllocatedVUs: VUS,
      maxVUs: VUS * 5,
      stages: [
        { target: Math.max(1, Math.floor(RATE / 10)), duration: DURATION },
        { target: RATE * 10, duration: '10s' },
        { target: RATE * 10, duration: DURATION },
        { target: Math.max(1, Math.floor(RATE / 10)), duration: '10s' },
      ],
    },
  },
  thresholds: thresholds({ http_req_duration: ['p(95)<500', 'p(99)<1500'] }),
};

const hooks = lifecycle('spike', MIX);
export const setup = hooks.setup;
export const teardown = hooks.teardown;
export const handleSummary = hooks.handleSummary;

export default function () {
  iteration(MIX);
}
