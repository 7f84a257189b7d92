package main

import (
	"fmt"
	"math"
	"strings"
)

// Hand-written SVG charts: grouped bars and lines, no external tools.

var palette = []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1"}

type series struct {
	name   string
	values []float64 // one per group; NaN = missing
}

type barChart struct {
	title, yLabel string
	groups        []string
	series        []series
	log           bool
	width, height int
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

func fmtNum(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v >= 10:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	case v > 0:
		return fmt.Sprintf("%.2g", v)
	}
	return "0"
}

// scale maps values to pixel heights, linearly from 0 or on a log axis.
type scale struct {
	log      bool
	min, max float64
	h        float64
}

func newScale(log bool, vals []float64, h float64) scale {
	s := scale{log: log, h: h, min: math.Inf(1), max: 0}
	for _, v := range vals {
		if math.IsNaN(v) || v <= 0 {
			continue
		}
		s.min, s.max = math.Min(s.min, v), math.Max(s.max, v)
	}
	if s.max == 0 {
		s.min, s.max = 1, 10
	}
	if log {
		s.min = math.Pow(10, math.Floor(math.Log10(s.min)))
		s.max = math.Pow(10, math.Ceil(math.Log10(s.max)))
		if s.max <= s.min {
			s.max = s.min * 10
		}
	} else {
		s.min = 0
		p := math.Pow(10, math.Floor(math.Log10(s.max)))
		s.max = math.Ceil(s.max/p) * p
	}
	return s
}

func (s scale) y(v float64) float64 {
	if s.log {
		if v <= 0 {
			return 0
		}
		return s.h * (math.Log10(v) - math.Log10(s.min)) / (math.Log10(s.max) - math.Log10(s.min))
	}
	return s.h * v / s.max
}

func (s scale) ticks() []float64 {
	var t []float64
	if s.log {
		for v := s.min; v <= s.max*1.0001; v *= 10 {
			t = append(t, v)
		}
		return t
	}
	for i := 0; i <= 5; i++ {
		t = append(t, s.max*float64(i)/5)
	}
	return t
}

func (c barChart) svg() string {
	if c.width == 0 {
		c.width, c.height = 760, 360
	}
	const left, right, top, bottom = 70, 20, 40, 70
	pw, ph := float64(c.width-left-right), float64(c.height-top-bottom)
	var all []float64
	for _, s := range c.series {
		all = append(all, s.values...)
	}
	sc := newScale(c.log, all, ph)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", c.width, c.height, c.width, c.height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", left, esc(c.title))
	fmt.Fprintf(&b, `<text transform="translate(14,%.0f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", top+ph/2, esc(c.yLabel))
	for _, t := range sc.ticks() {
		y := top + ph - sc.y(t)
		fmt.Fprintf(&b, `<line x1="%d" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, left, left+pw, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" dy="4">%s</text>`+"\n", left-6, y, fmtNum(t))
	}
	gw := pw / float64(max(len(c.groups), 1))
	bw := gw * 0.8 / float64(max(len(c.series), 1))
	for gi, g := range c.groups {
		gx := left + gw*float64(gi)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", gx+gw/2, top+ph+16, esc(g))
		for si, s := range c.series {
			if gi >= len(s.values) || math.IsNaN(s.values[gi]) {
				continue
			}
			v := s.values[gi]
			h := sc.y(v)
			x := gx + gw*0.1 + bw*float64(si)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`,
				x, top+ph-h, bw-1, h, palette[si%len(palette)], esc(s.name), esc(g), fmtNum(v))
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>`+"\n", x+bw/2, top+ph-h-3, fmtNum(v))
		}
	}
	fmt.Fprintf(&b, `<line x1="%d" x2="%.0f" y1="%.0f" y2="%.0f" stroke="#333"/>`+"\n", left, left+pw, top+ph, top+ph)
	lx := float64(left)
	for si, s := range c.series {
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="10" height="10" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
			lx, top+ph+34, palette[si%len(palette)], lx+14, top+ph+43, esc(s.name))
		lx += 24 + 6.5*float64(len(s.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

type lineChart struct {
	title, xLabel, yLabel string
	lines                 []line
	marks                 []mark // vertical markers
	width, height         int
}

type line struct {
	name string
	x, y []float64
}

type mark struct {
	x    float64
	text string
}

func (c lineChart) svg() string {
	if c.width == 0 {
		c.width, c.height = 760, 320
	}
	const left, right, top, bottom = 70, 20, 40, 60
	pw, ph := float64(c.width-left-right), float64(c.height-top-bottom)
	var xs, ys []float64
	for _, l := range c.lines {
		xs, ys = append(xs, l.x...), append(ys, l.y...)
	}
	xsc, ysc := newScale(false, xs, pw), newScale(false, ys, ph)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", c.width, c.height, c.width, c.height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", left, esc(c.title))
	fmt.Fprintf(&b, `<text transform="translate(14,%.0f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", top+ph/2, esc(c.yLabel))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`+"\n", left+pw/2, top+ph+34, esc(c.xLabel))
	for _, t := range ysc.ticks() {
		y := top + ph - ysc.y(t)
		fmt.Fprintf(&b, `<line x1="%d" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end" dy="4">%s</text>`+"\n", left, left+pw, y, y, left-6, y, fmtNum(t))
	}
	for _, t := range xsc.ticks() {
		x := left + xsc.y(t)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", x, top+ph+16, fmtNum(t))
	}
	for _, m := range c.marks {
		x := left + xsc.y(m.x)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%.0f" stroke="#999" stroke-dasharray="4 3"/><text x="%.1f" y="%d" font-size="10">%s</text>`+"\n",
			x, x, top, top+ph, x+3, top+10, esc(m.text))
	}
	for li, l := range c.lines {
		var pts []string
		for i := range l.x {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", left+xsc.y(l.x[i]), top+ph-ysc.y(l.y[i])))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", palette[li%len(palette)], strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%d" y="%.0f" width="10" height="10" fill="%s"/><text x="%d" y="%.0f">%s</text>`+"\n",
			left+li*200, top+ph+30, palette[li%len(palette)], left+14+li*200, top+ph+39, esc(l.name))
	}
	fmt.Fprintf(&b, `<line x1="%d" x2="%.0f" y1="%.0f" y2="%.0f" stroke="#333"/>`+"\n", left, left+pw, top+ph, top+ph)
	b.WriteString("</svg>\n")
	return b.String()
}
