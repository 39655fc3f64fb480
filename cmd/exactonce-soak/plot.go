package main

import (
	"fmt"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// drawPNG draws the series as two panels sharing the time axis: above, the
// data dir, the state file and each node's resident memory in MiB; below,
// the actions created so far and those stored (created, not yet deleted).
func drawPNG(path string, m meta, series []sample) error {
	minutes := func(s sample) float64 { return s.Elapsed.Minutes() }
	line := func(f func(sample) float64) plotter.XYs { return xys(series, f) }

	top := plot.New()
	top.Title.Text = fmt.Sprintf("ExactOnce soak: %d node(s), --retention %s, %d workers of create + consume, %d B payloads",
		m.Nodes, m.Retention, m.Workers, m.Payload)
	top.Y.Label.Text = "MiB"
	top.Y.Min = 0
	top.Legend.Top = true
	top.Legend.Left = true
	top.Add(plotter.NewGrid())
	lines := []struct {
		name string
		f    func(sample) float64
	}{
		{"data dir on disk (all nodes)", func(s sample) float64 { return mib(s.DataDir) }},
		{"state file (node 1)", func(s sample) float64 { return mib(s.StateFile) }},
	}
	for i := range m.Nodes {
		lines = append(lines, struct {
			name string
			f    func(sample) float64
		}{fmt.Sprintf("RSS node %d", i+1), func(s sample) float64 {
			if i < len(s.RSS) {
				return mib(s.RSS[i])
			}
			return 0
		}})
	}
	for i, l := range lines {
		pl, err := plotter.NewLine(line(l.f))
		if err != nil {
			return fmt.Errorf("plot %s: %w", l.name, err)
		}
		pl.Color = plotutil.Color(i)
		pl.Width = vg.Points(1.5)
		top.Add(pl)
		top.Legend.Add(l.name, pl)
	}

	bottom := plot.New()
	bottom.X.Label.Text = "minutes"
	bottom.Y.Label.Text = "actions (thousands)"
	bottom.Y.Min = 0
	bottom.Legend.Top = true
	bottom.Legend.Left = true
	bottom.Add(plotter.NewGrid())
	var stored []sample // samples whose stats call answered
	for _, s := range series {
		if s.Stored >= 0 {
			stored = append(stored, s)
		}
	}
	for i, l := range []struct {
		name string
		xy   plotter.XYs
	}{
		{"created", line(func(s sample) float64 { return float64(s.Created) / 1000 })},
		{"stored (created, not yet deleted by retention)", xys(stored, func(s sample) float64 { return float64(s.Stored) / 1000 })},
	} {
		if len(l.xy) == 0 {
			continue
		}
		pl, err := plotter.NewLine(l.xy)
		if err != nil {
			return fmt.Errorf("plot %s: %w", l.name, err)
		}
		pl.Color = plotutil.Color(len(lines) + i)
		pl.Width = vg.Points(1.5)
		bottom.Add(pl)
		bottom.Legend.Add(l.name, pl)
	}
	// Room above the lines for the legends; plain tick labels.
	for _, p := range []*plot.Plot{top, bottom} {
		p.Y.Max *= 1.3
		p.Y.Tick.Marker = plainTicks
		p.X.Tick.Marker = plainTicks
	}
	// The same time axis for both panels.
	for _, p := range []*plot.Plot{top, bottom} {
		p.X.Min = 0
		p.X.Max = minutes(series[len(series)-1])
	}

	const w, h = 24 * vg.Centimeter, 18 * vg.Centimeter
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2,
		PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4, PadY: vg.Millimeter * 4}
	canvases := plot.Align([][]*plot.Plot{{top}, {bottom}}, tiles, dc)
	top.Draw(canvases[0][0])
	bottom.Draw(canvases[1][0])

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("draw png: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("draw png: %w", err)
	}
	return f.Close()
}

// xys is the points (elapsed minutes, f) of the samples.
func xys(series []sample, f func(sample) float64) plotter.XYs {
	xy := make(plotter.XYs, len(series))
	for i, s := range series {
		xy[i].X, xy[i].Y = s.Elapsed.Minutes(), f(s)
	}
	return xy
}

// plainTicks are gonum's default ticks labelled without trailing zeros
// ("500", not "500.00").
var plainTicks = plot.TickerFunc(func(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'f', -1, 64)
		}
	}
	return ticks
})
