package benchplot

import (
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestWritePNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out", "plot.png")
	g := Grid{
		Title: "two tools, two measures",
		Rows:  2, Cols: 2,
		Panels: []Panel{
			{Title: "downtime", YLabel: "ms", Target: 20, TargetLabel: "target 20 ms", Series: []Series{
				{Name: "a", Values: []float64{12, 15, 30, 9}},
				{Name: "b", Values: []float64{80, 120, 95, 60}, Failed: []bool{false, true}},
			}},
			{Title: "total", YLabel: "s", Series: []Series{{Name: "a", Values: []float64{0.8, 0.9, 1.1, 0.7}}}},
			{Title: "empty"},
		},
	}
	if err := WritePNG(path, g); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 1000 || b.Dy() < 600 {
		t.Errorf("image %v: too small to read", b)
	}
	if out := os.Getenv("BENCHPLOT_SAMPLE"); out != "" {
		if err := WritePNG(out, g); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWritePNGRefusesBadGrids(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.png")
	if err := WritePNG(path, Grid{Rows: 0, Cols: 1}); err == nil {
		t.Error("a grid without rows was accepted")
	}
	if err := WritePNG(path, Grid{Rows: 1, Cols: 1, Panels: make([]Panel, 2)}); err == nil {
		t.Error("two panels in a 1×1 grid were accepted")
	}
}

func TestNiceTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   []string
	}{
		{0, 3.4, []string{"0.0", "0.5", "1.0", "1.5", "2.0", "2.5", "3.0"}},
		{0, 0.7, []string{"0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"}},
		{0, 160, []string{"0", "25", "50", "75", "100", "125", "150"}},
		{0, 60, []string{"0", "10", "20", "30", "40", "50", "60"}},
		{0, 1, []string{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"}},
	} {
		var got []string
		for _, tk := range (niceTicks{}).Ticks(tc.lo, tc.hi) {
			if tk.Label != "" {
				got = append(got, tk.Label)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("ticks of [%v, %v] = %v, want %v", tc.lo, tc.hi, got, tc.want)
		}
	}
}
