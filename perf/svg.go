package perf

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Chart colours, one per column of a workload's table (cycled).
var chartColors = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"}

const (
	chartWidth   = 720
	chartLabelW  = 230
	chartBarH    = 16
	chartPadding = 12
	chartFont    = `font-family="sans-serif" font-size="12"`
)

// throughputSVG draws publish and consume MB/s per system as horizontal bars on a
// linear scale.
func throughputSVG(workload string, rs []*Result) string {
	type bar struct {
		label string
		v     float64
		color string
	}
	var bars []bar
	maxV := 0.0
	for i, r := range rs {
		c := chartColors[i%len(chartColors)]
		bars = append(bars, bar{r.Label() + " publish", r.PublishRateMBs, c}, bar{r.Label() + " consume", r.ConsumeRateMBs, c})
		maxV = math.Max(maxV, math.Max(r.PublishRateMBs, r.ConsumeRateMBs))
	}
	if maxV <= 0 {
		maxV = 1
	}
	h := 40 + len(bars)*(chartBarH+6) + chartPadding
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n", chartWidth, h, chartWidth, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" %s font-weight="bold">%s — throughput (MB/s of payload)</text>`+"\n", chartPadding, chartFont, html.EscapeString(workload))
	plotW := float64(chartWidth - chartLabelW - 90)
	for i, br := range bars {
		y := 36 + i*(chartBarH+6)
		w := plotW * br.v / maxV
		fmt.Fprintf(&b, `<text x="%d" y="%d" %s text-anchor="end">%s</text>`+"\n", chartLabelW-6, y+chartBarH-4, chartFont, html.EscapeString(br.label))
		opacity := "1"
		if i%2 == 1 {
			opacity = "0.55" // consume bars lighter than publish bars
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s" fill-opacity="%s"/>`+"\n", chartLabelW, y, w, chartBarH, br.color, opacity)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" %s>%.1f</text>`+"\n", float64(chartLabelW)+w+4, y+chartBarH-4, chartFont, br.v)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// latencySVG draws latency percentiles (end-to-end when every system has them, else
// publish) as grouped vertical bars on a log scale: tails span orders of magnitude.
func latencySVG(workload string, rs []*Result) string {
	e2e := true
	for _, r := range rs {
		e2e = e2e && r.EndToEndLatency.Count > 0
	}
	kind := "end-to-end"
	get := func(r *Result) LatencySummary { return r.EndToEndLatency }
	if !e2e {
		kind = "publish"
		get = func(r *Result) LatencySummary { return r.PublishLatency }
	}
	pcts := []string{"p50", "p99", "p99.9", "max"}
	vals := func(s LatencySummary) []float64 { return []float64{s.P50Us, s.P99Us, s.P999Us, s.MaxUs} }
	lo, hi := math.Inf(1), 0.0
	for _, r := range rs {
		for _, v := range vals(get(r)) {
			if v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if hi == 0 {
		lo, hi = 1, 10
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	if hi <= lo {
		hi = lo * 10
	}
	const top, plotH, left = 50, 260, 70
	legendH := 18 * len(rs)
	h := top + plotH + 40 + legendH
	groupW := float64(chartWidth-left-chartPadding) / float64(len(pcts))
	barW := (groupW - 20) / float64(max(1, len(rs)))
	y := func(v float64) float64 {
		return top + plotH - plotH*(math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n", chartWidth, h, chartWidth, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" %s font-weight="bold">%s — %s latency (log scale)</text>`+"\n", chartPadding, chartFont, html.EscapeString(workload), kind)
	for d := lo; d <= hi*1.0001; d *= 10 {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, chartWidth-chartPadding, y(d), y(d))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" %s text-anchor="end">%s</text>`+"\n", left-4, y(d)+4, chartFont, FormatMicros(d))
	}
	for g, name := range pcts {
		x0 := float64(left) + float64(g)*groupW + 10
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" %s text-anchor="middle">%s</text>`+"\n", x0+(groupW-20)/2, top+plotH+18, chartFont, name)
		for i, r := range rs {
			v := vals(get(r))[g]
			if v <= 0 {
				continue
			}
			x := x0 + float64(i)*barW
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
				x, y(v), barW-2, float64(top+plotH)-y(v), chartColors[i%len(chartColors)], html.EscapeString(r.Label()), name, FormatMicros(v))
		}
	}
	for i, r := range rs {
		ly := top + plotH + 36 + 18*i
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`+"\n", left, ly-10, chartColors[i%len(chartColors)])
		s := get(r)
		fmt.Fprintf(&b, `<text x="%d" y="%d" %s>%s — p50 %s, p99 %s, p99.9 %s, max %s</text>`+"\n", left+18, ly, chartFont,
			html.EscapeString(r.Label()), FormatMicros(s.P50Us), FormatMicros(s.P99Us), FormatMicros(s.P999Us), FormatMicros(s.MaxUs))
	}
	b.WriteString("</svg>\n")
	return b.String()
}
