// A small SVG bar chart: one bar per minute of the last hour, placed by time, so a minute
// without a sample shows as a gap rather than shifting the others.
import { svg } from "./dom.js";

const WIDTH = 600;
const HEIGHT = 140;
const LEFT = 40;
const TOP = 8;
const BOTTOM = 18;
const PLOT_WIDTH = WIDTH - LEFT;
const PLOT_HEIGHT = HEIGHT - TOP - BOTTOM;
const MINUTE_MS = 60_000;
const WINDOW_MS = 60 * MINUTE_MS;

// `layers`: [{value: (minute) => number, className}], drawn in order, each over the previous;
// the first one sets the scale (the others are parts of it).
export function drawMinutes(target, minutes, layers, nowIso) {
  const end = Date.parse(nowIso);
  const top = Math.max(1, ...minutes.map(layers[0].value));
  const barWidth = (MINUTE_MS / WINDOW_MS) * PLOT_WIDTH - 1;
  const x = (ms) => {
    const offset = ((ms - (end - WINDOW_MS)) / WINDOW_MS) * PLOT_WIDTH;
    return LEFT + Math.min(Math.max(offset, 0), PLOT_WIDTH - barWidth);
  };
  const bars = [];
  for (const minute of minutes) {
    const at = Date.parse(minute.at);
    for (const layer of layers) {
      const value = layer.value(minute);
      const height = (value / top) * PLOT_HEIGHT;
      const label = `${new Date(at).toLocaleTimeString()}: ${value}`;
      bars.push(
        svg(
          "rect",
          {
            x: x(at).toFixed(1),
            y: (TOP + PLOT_HEIGHT - height).toFixed(1),
            width: barWidth.toFixed(1),
            height: height.toFixed(1),
            class: layer.className,
          },
          svg("title", {}, label),
        ),
      );
    }
  }
  const baseline = TOP + PLOT_HEIGHT;
  target.replaceChildren(
    svg("line", { x1: LEFT, y1: baseline, x2: WIDTH, y2: baseline, class: "axis" }),
    svg("line", { x1: LEFT, y1: TOP, x2: WIDTH, y2: TOP, class: "grid" }),
    svg("text", { x: LEFT - 6, y: TOP + 4, "text-anchor": "end", class: "label" }, top),
    svg("text", { x: LEFT - 6, y: baseline + 4, "text-anchor": "end", class: "label" }, 0),
    svg("text", { x: LEFT, y: HEIGHT - 2, class: "label" }, "−60 min"),
    svg("text", { x: WIDTH, y: HEIGHT - 2, "text-anchor": "end", class: "label" }, "now"),
    ...bars,
  );
}
