import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";

/** Points of T, R, A and ODTE over time: x in seconds since the epoch. */
export interface Series {
  t: number[];
  timeliness: number[];
  reliability: number[];
  availability: number[];
  odte: number[];
}

export const emptySeries = (): Series => ({
  t: [],
  timeliness: [],
  reliability: [],
  availability: [],
  odte: [],
});

// Colours with at least 3:1 contrast against white (WCAG 1.4.11), told apart by dash as well.
const LINES = [
  { label: "T", stroke: "#1f5fbf", dash: [6, 3] },
  { label: "R", stroke: "#a3470a", dash: [2, 2] },
  { label: "A", stroke: "#2d7a2d", dash: [8, 2, 2, 2] },
  { label: "ODTE", stroke: "#111111", width: 2.5 },
];

/** A uPlot chart of `series`, redrawn as it grows; its figures are also given as text by the caller. */
export function EntanglementPlot({ series }: { series: Series }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | undefined>(undefined);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const width = () => Math.max(260, el.clientWidth);
    plot.current = new uPlot(
      {
        width: width(),
        height: 240,
        scales: { y: { range: [0, 1.05] } },
        axes: [{}, { values: (_u, ticks) => ticks.map((v) => v.toFixed(1)) }],
        series: [
          {},
          ...LINES.map((l) => ({
            label: l.label,
            stroke: l.stroke,
            width: l.width ?? 1.5,
            ...(l.dash ? { dash: l.dash } : {}),
          })),
        ],
      },
      [[], [], [], [], []],
      el,
    );
    const resize = () => plot.current?.setSize({ width: width(), height: 240 });
    window.addEventListener("resize", resize);
    return () => {
      window.removeEventListener("resize", resize);
      plot.current?.destroy();
    };
  }, []);
  useEffect(() => {
    plot.current?.setData([
      series.t,
      series.timeliness,
      series.reliability,
      series.availability,
      series.odte,
    ]);
  });
  return (
    <div
      ref={box}
      class="plot"
      role="img"
      aria-label={`T, R, A and ODTE over time: ${series.t.length} points`}
      data-points={series.t.length}
    />
  );
}
