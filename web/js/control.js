// control_after_generate: how a seed (or any controlled widget) changes after each queued prompt.
//
// Like ComfyUI, the value that was just queued is the one shown until the prompt is sent; the control mode is
// applied afterwards, so the next queue gets the new value: fixed keeps it, increment / decrement step by the
// widget's step (clamped to min / max), randomize draws a new one.

// Random seeds stay within what a JS number holds exactly (and what ComfyUI's editor draws from).
const RANDOM_LIMIT = 1125899906842624;

/**
 * The value after one queue. `options`: {min, max, step} for numbers, {values} for combos.
 * `random` returns a float in [0, 1) (Math.random by default; injectable for tests).
 */
export function nextValue(mode, value, options, random = Math.random) {
  if (Array.isArray(options.values)) return nextChoice(mode, value, options.values, random);
  const step = Number(options.step) > 0 ? Number(options.step) : 1;
  const min = Number.isFinite(options.min) ? options.min : -RANDOM_LIMIT;
  const max = Number.isFinite(options.max) ? options.max : RANDOM_LIMIT;
  let next = value;
  switch (mode) {
    case "increment":
      next = value + step;
      break;
    case "decrement":
      next = value - step;
      break;
    case "randomize": {
      const low = Math.max(min, -RANDOM_LIMIT);
      const high = Math.min(max, RANDOM_LIMIT);
      const count = Math.floor((high - low) / step);
      next = low + Math.floor(random() * (count + 1)) * step;
      break;
    }
    default:
      return value;
  }
  return Math.min(Math.max(next, min), max);
}

function nextChoice(mode, value, values, random) {
  if (values.length === 0) return value;
  const index = values.indexOf(value);
  switch (mode) {
    case "increment":
      return values[Math.min(index + 1, values.length - 1)];
    case "decrement":
      return values[Math.max(index - 1, 0)];
    case "randomize":
      return values[Math.floor(random() * values.length)];
    default:
      return value;
  }
}
