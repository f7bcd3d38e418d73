// SPDX-License-Identifier: Apache-2.0

// Package benchstat summarises the interleaved measurements of `make bench`
// (DESIGN.md §7): every ratio row is at least MinPairs pairs, reported as
// the median of the per-pair ratios with its interquartile range, minimum
// and maximum, and met when the median is.
//
// Percentiles interpolate linearly between the closest ranks (Hyndman and
// Fan's type 7, the default of R and numpy), so the median of an even
// count is the mean of the two middle values and the 25th percentile of
// 1..5 is 2.
package benchstat

import (
	"fmt"
	"math"
	"slices"
	"strconv"
)

// MinPairs is the fewest interleaved pairs a ratio row uses: with fewer,
// one run's median moves by more than the targets' margins on a shared
// 2-core VM (DESIGN.md §7).
const MinPairs = 41

// Pairs is the number of pairs a ratio row uses: MinPairs, or more when
// env (the value of BENCH_PAIRS) asks for more. It never returns fewer.
func Pairs(env string) int {
	if n, err := strconv.Atoi(env); err == nil && n > MinPairs {
		return n
	}
	return MinPairs
}

// Summary describes a sample: its size, extremes and quartiles.
type Summary struct {
	N                          int
	Min, P25, Median, P75, Max float64
}

// Summarize returns the summary of d, which it does not modify. An empty
// sample summarises to NaNs.
func Summarize(d []float64) Summary {
	s := slices.Clone(d)
	slices.Sort(s)
	return Summary{
		N:      len(s),
		Min:    percentileSorted(s, 0),
		P25:    percentileSorted(s, 0.25),
		Median: percentileSorted(s, 0.5),
		P75:    percentileSorted(s, 0.75),
		Max:    percentileSorted(s, 1),
	}
}

// Percentile returns the p-th quantile of d (p from 0 to 1), interpolated
// between the closest ranks; NaN for an empty d or p outside [0, 1].
func Percentile(d []float64, p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return percentileSorted(s, p)
}

func percentileSorted(s []float64, p float64) float64 {
	if len(s) == 0 || !(p >= 0 && p <= 1) {
		return math.NaN()
	}
	h := float64(len(s)-1) * p
	lo := int(math.Floor(h))
	if lo == len(s)-1 {
		return s[lo]
	}
	return s[lo] + (h-float64(lo))*(s[lo+1]-s[lo])
}

// IQR is the interquartile range, P75 - P25.
func (s Summary) IQR() float64 { return s.P75 - s.P25 }

// Contains reports whether v lies within the interquartile range.
func (s Summary) Contains(v float64) bool { return v >= s.P25 && v <= s.P75 }

// String prints a ratio summary: "1.032 (IQR 0.981-1.090, min 0.810, max 1.402, 41 pairs)".
func (s Summary) String() string {
	return fmt.Sprintf("%.3f (IQR %.3f–%.3f, min %.3f, max %.3f, %d pairs)", s.Median, s.P25, s.P75, s.Min, s.Max, s.N)
}

// Ratios returns b[i]/a[i] for every pair; a and b must have one length.
func Ratios(a, b []float64) []float64 {
	if len(a) != len(b) {
		panic(fmt.Sprintf("benchstat.Ratios: %d values against %d", len(a), len(b)))
	}
	r := make([]float64, len(a))
	for i := range a {
		r[i] = b[i] / a[i]
	}
	return r
}
