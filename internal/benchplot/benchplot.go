// Package benchplot draws benchmark results as a PNG: a grid of panels, each showing
// one measure per run for several tools side by side, with the target as a dashed line
// and runs that did not complete marked. It is built on gonum.org/v1/plot.
package benchplot

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Series is one tool's values in a panel, one per run, in run order.
type Series struct {
	// Name is the legend entry, e.g. "godwit (balanced)".
	Name string
	// Values holds one value per run.
	Values []float64
	// Failed marks the runs that did not complete (drawn with a cross on top);
	// nil or shorter than Values means none.
	Failed []bool
}

// Panel is one chart of the grid.
type Panel struct {
	Title  string
	YLabel string
	Series []Series
	// Target, when above 0, is drawn as a dashed horizontal line labelled TargetLabel.
	Target      float64
	TargetLabel string
}

// Grid is the whole figure: Rows × Cols panels, filled row by row.
type Grid struct {
	Title      string
	Rows, Cols int
	Panels     []Panel
	// Width and Height of the PNG; 0 means 7 inches per column and 3.6 per row.
	Width, Height vg.Length
}

// palette gives each series of a panel its colour and marker, in order.
var palette = []struct {
	c     color.Color
	shape draw.GlyphDrawer
}{
	{color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, draw.CircleGlyph{}},
	{color.RGBA{R: 0xd6, G: 0x62, B: 0x0b, A: 0xff}, draw.BoxGlyph{}},
	{color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, draw.TriangleGlyph{}},
	{color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, draw.PyramidGlyph{}},
}

// failColor marks runs that did not complete.
var failColor = color.RGBA{R: 0xd0, A: 0xff}

// WritePNG draws g and writes it to path as a PNG, creating path's directory.
func WritePNG(path string, g Grid) error {
	if g.Rows <= 0 || g.Cols <= 0 {
		return fmt.Errorf("benchplot: the grid has %d rows and %d columns; both must be positive", g.Rows, g.Cols)
	}
	if len(g.Panels) > g.Rows*g.Cols {
		return fmt.Errorf("benchplot: %d panels do not fit a grid of %d×%d", len(g.Panels), g.Rows, g.Cols)
	}
	w, h := g.Width, g.Height
	if w <= 0 {
		w = vg.Length(g.Cols) * 7 * vg.Inch
	}
	if h <= 0 {
		h = vg.Length(g.Rows)*3.6*vg.Inch + titleSpace(g)
	}

	plots := make([][]*plot.Plot, g.Rows)
	for r := range plots {
		plots[r] = make([]*plot.Plot, g.Cols)
		for c := range plots[r] {
			i := r*g.Cols + c
			if i >= len(g.Panels) {
				continue
			}
			p, err := panelPlot(g.Panels[i])
			if err != nil {
				return fmt.Errorf("benchplot: panel %q: %w", g.Panels[i].Title, err)
			}
			plots[r][c] = p
		}
	}

	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(96))
	dc := draw.New(img)
	// White background: PNG viewers show transparency in odd ways.
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	if g.Title != "" {
		font := plot.DefaultFont
		font.Size = vg.Points(15)
		sty := draw.TextStyle{Color: color.Black, Font: font, XAlign: draw.XCenter, YAlign: draw.YTop,
			Handler: plot.DefaultTextHandler}
		dc.FillText(sty, vg.Point{X: w / 2, Y: h - vg.Points(6)}, g.Title)
		dc.Rectangle.Max.Y -= titleSpace(g)
	}
	tiles := draw.Tiles{
		Rows: g.Rows, Cols: g.Cols,
		PadTop: vg.Points(8), PadBottom: vg.Points(8), PadLeft: vg.Points(8), PadRight: vg.Points(12),
		PadX: vg.Points(24), PadY: vg.Points(18),
	}
	canvases := plot.Align(plots, tiles, dc)
	for r := range plots {
		for c, p := range plots[r] {
			if p != nil {
				p.Draw(canvases[r][c])
			}
		}
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, werr := vgimg.PngCanvas{Canvas: img}.WriteTo(f)
	return errors.Join(werr, f.Close())
}

// titleSpace is the height the figure's title takes.
func titleSpace(g Grid) vg.Length {
	if g.Title == "" {
		return 0
	}
	return vg.Points(26)
}

// panelPlot builds one panel: runs 1..n on X, each series as points joined by lines.
func panelPlot(pn Panel) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = pn.Title
	p.Title.TextStyle.Font.Size = vg.Points(12)
	p.X.Label.Text = "run"
	p.Y.Label.Text = pn.YLabel
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = false
	p.Legend.TextStyle.Font.Size = vg.Points(10)

	runs, top := 0, pn.Target
	var failed plotter.XYs
	for i, s := range pn.Series {
		if len(s.Values) == 0 {
			continue
		}
		runs = max(runs, len(s.Values))
		xys := make(plotter.XYs, len(s.Values))
		for j, v := range s.Values {
			xys[j] = plotter.XY{X: float64(j + 1), Y: v}
			top = max(top, v)
			if j < len(s.Failed) && s.Failed[j] {
				failed = append(failed, xys[j])
			}
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, fmt.Errorf("series %s: %w", s.Name, err)
		}
		st := palette[i%len(palette)]
		line.Color = st.c
		line.Width = vg.Points(1)
		points.Color = st.c
		points.Shape = st.shape
		points.Radius = vg.Points(3)
		p.Add(line, points)
		p.Legend.Add(s.Name, line, points)
	}
	if runs == 0 {
		runs = 1
	}
	if len(failed) > 0 {
		marks, err := plotter.NewScatter(failed)
		if err != nil {
			return nil, err
		}
		marks.Shape = draw.CrossGlyph{}
		marks.Color = failColor
		marks.Radius = vg.Points(6)
		p.Add(marks)
		p.Legend.Add("did not complete", marks)
	}
	if pn.Target > 0 {
		tl, err := plotter.NewLine(plotter.XYs{{X: 0.5, Y: pn.Target}, {X: float64(runs) + 0.5, Y: pn.Target}})
		if err != nil {
			return nil, err
		}
		tl.Color = color.Gray{Y: 0x40}
		tl.Dashes = []vg.Length{vg.Points(5), vg.Points(4)}
		tl.Width = vg.Points(1)
		p.Add(tl)
		label := pn.TargetLabel
		if label == "" {
			label = "target"
		}
		p.Legend.Add(label, tl)
	}
	p.X.Min, p.X.Max = 0.5, float64(runs)+0.5
	p.X.Tick.Marker = runTicks(runs)
	p.Y.Tick.Marker = niceTicks{}
	// Room above the highest value for the legend.
	p.Y.Max = top * 1.35
	if p.Y.Max <= 0 {
		p.Y.Max = 1
	}
	return p, nil
}

// runTicks labels every run on the X axis.
type runTicks int

// Ticks implements plot.Ticker.
func (n runTicks) Ticks(_, _ float64) []plot.Tick {
	var t []plot.Tick
	for i := 1; i <= int(n); i++ {
		t = append(t, plot.Tick{Value: float64(i), Label: fmt.Sprint(i)})
	}
	return t
}

// niceTicks puts six to eight major ticks at steps of 1, 2, 2.5 or 5 times a power of ten.
type niceTicks struct{}

// Ticks implements plot.Ticker.
func (niceTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(hi > lo) {
		return []plot.Tick{{Value: lo, Label: fmt.Sprint(lo)}}
	}
	raw := (hi - lo) / 7
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	// As many decimals as the step needs.
	prec := 0
	for ; prec < 6; prec++ {
		x := step * math.Pow(10, float64(prec))
		if math.Abs(x-math.Round(x)) < 1e-6 {
			break
		}
	}
	var t []plot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi+step*1e-9; v += step {
		t = append(t, plot.Tick{Value: v, Label: fmt.Sprintf("%.*f", prec, v)})
		// Minor ticks halfway.
		if mid := v + step/2; mid < hi {
			t = append(t, plot.Tick{Value: mid})
		}
	}
	return t
}
