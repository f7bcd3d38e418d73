// SPDX-License-Identifier: Apache-2.0

package benchstat

import (
	"math"
	"slices"
	"testing"
)

func TestPercentile(t *testing.T) {
	tests := []struct {
		name string
		d    []float64
		p    float64
		want float64
	}{
		{"median of an odd count is the middle value", []float64{3, 1, 2}, 0.5, 2},
		{"median of an even count is the mean of the middle two", []float64{4, 1, 3, 2}, 0.5, 2.5},
		{"first quartile of 1..5 falls on a rank", []float64{5, 4, 3, 2, 1}, 0.25, 2},
		{"third quartile of 1..5 falls on a rank", []float64{1, 2, 3, 4, 5}, 0.75, 4},
		{"first quartile of 1..4 interpolates", []float64{1, 2, 3, 4}, 0.25, 1.75},
		{"third quartile of 1..4 interpolates", []float64{1, 2, 3, 4}, 0.75, 3.25},
		{"p = 0 is the minimum", []float64{7, -2, 9}, 0, -2},
		{"p = 1 is the maximum", []float64{7, -2, 9}, 1, 9},
		{"one value is every percentile", []float64{42}, 0.9, 42},
		{"ties", []float64{1, 1, 1, 5}, 0.5, 1},
		{"p99 of 1..101", seq(101), 0.99, 100},
	}
	for _, tt := range tests {
		if got := Percentile(tt.d, tt.p); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("%s: Percentile(%v, %v) = %v, want %v", tt.name, tt.d, tt.p, got, tt.want)
		}
	}
}

func TestPercentileUndefined(t *testing.T) {
	for _, tt := range []struct {
		d []float64
		p float64
	}{{nil, 0.5}, {[]float64{1}, -0.1}, {[]float64{1}, 1.1}, {[]float64{1}, math.NaN()}} {
		if got := Percentile(tt.d, tt.p); !math.IsNaN(got) {
			t.Errorf("Percentile(%v, %v) = %v, want NaN", tt.d, tt.p, got)
		}
	}
}

func TestSummarize(t *testing.T) {
	d := []float64{9, 1, 5, 3, 7, 2, 8, 4, 6} // 1..9
	orig := slices.Clone(d)
	s := Summarize(d)
	want := Summary{N: 9, Min: 1, P25: 3, Median: 5, P75: 7, Max: 9}
	if s != want {
		t.Errorf("Summarize = %+v, want %+v", s, want)
	}
	if !slices.Equal(d, orig) {
		t.Errorf("Summarize reordered its input: %v", d)
	}
	if s.IQR() != 4 {
		t.Errorf("IQR = %v, want 4", s.IQR())
	}
	for v, in := range map[float64]bool{2.9: false, 3: true, 5: true, 7: true, 7.1: false} {
		if s.Contains(v) != in {
			t.Errorf("Contains(%v) = %v, want %v", v, !in, in)
		}
	}
	if got, want := s.String(), "5.000 (IQR 3.000–7.000, min 1.000, max 9.000, 9 pairs)"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

func TestPairs(t *testing.T) {
	for env, want := range map[string]int{"": MinPairs, "x": MinPairs, "-5": MinPairs, "20": MinPairs, "41": 41, "101": 101} {
		if got := Pairs(env); got != want {
			t.Errorf("Pairs(%q) = %d, want %d", env, got, want)
		}
	}
}

func TestRatios(t *testing.T) {
	if got := Ratios([]float64{2, 4}, []float64{3, 2}); !slices.Equal(got, []float64{1.5, 0.5}) {
		t.Errorf("Ratios = %v", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("Ratios of unequal lengths did not panic")
		}
	}()
	Ratios([]float64{1}, nil)
}

func seq(n int) []float64 {
	d := make([]float64, n)
	for i := range d {
		d[i] = float64(i + 1)
	}
	return d
}
