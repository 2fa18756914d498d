package perf

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// fetchBytesMetric is the counter Gregor's data plane exports for bytes sent in Fetch
// responses, labelled by path: "sendfile" (zero-copy from the page cache) or "copy"
// (read into user space, e.g. for a TLS connection or a partial batch).
const fetchBytesMetric = "gregor_fetch_bytes_total"

// Limits on reading a /metrics page.
const (
	metricsBodyMax = 8 << 20
	metricsTimeout = 2 * time.Second
)

// Metrics is one scrape of a Prometheus text page: every sample's value by its series,
// the metric name with its labels exactly as the page writes them
// (`gregor_fetch_bytes_total{path="sendfile"}`).
type Metrics map[string]float64

// ScrapeMetrics reads the Prometheus text page at url.
func ScrapeMetrics(ctx context.Context, url string) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, metricsTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("perf: metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("perf: metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("perf: metrics: %s: %s", url, resp.Status)
	}
	return ParseMetrics(io.LimitReader(resp.Body, metricsBodyMax)), nil
}

// ParseMetrics reads the samples of a Prometheus text exposition; comments and lines it
// cannot read are skipped.
func ParseMetrics(r io.Reader) Metrics {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The series ends at the closing brace of its labels, or at the first blank.
		end := strings.IndexByte(line, ' ')
		if b := strings.IndexByte(line, '{'); b >= 0 && (end < 0 || b < end) {
			c := strings.LastIndexByte(line, '}')
			if c < 0 {
				continue
			}
			end = c + 1
		}
		if end <= 0 || end >= len(line) {
			continue
		}
		rest := strings.Fields(line[end:])
		if len(rest) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(rest[0], 64)
		if err != nil {
			continue
		}
		m[line[:end]] = v
	}
	return m
}

// splitSeries returns a series' metric name and its labels (without braces).
func splitSeries(series string) (name, labels string) {
	if i := strings.IndexByte(series, '{'); i >= 0 {
		return series[:i], strings.TrimSuffix(series[i+1:], "}")
	}
	return series, ""
}

// Sum adds the samples of metric name whose labels include every one of labels (each
// written `key="value"`); found is false when there is none.
func (m Metrics) Sum(name string, labels ...string) (sum float64, found bool) {
	for series, v := range m {
		n, ls := splitSeries(series)
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !hasLabel(ls, l) {
				ok = false
				break
			}
		}
		if ok {
			sum += v
			found = true
		}
	}
	return sum, found
}

// ByLabel adds the samples of metric name by the value of their label key; samples
// without that label are added under "".
func (m Metrics) ByLabel(name, key string) map[string]float64 {
	out := map[string]float64{}
	for series, v := range m {
		n, ls := splitSeries(series)
		if n != name {
			continue
		}
		out[labelValue(ls, key)] += v
	}
	return out
}

// hasLabel reports whether a label list (`a="x",b="y"`) holds the pair l (`b="y"`).
func hasLabel(labels, l string) bool {
	for _, p := range splitLabels(labels) {
		if p == l {
			return true
		}
	}
	return false
}

// labelValue is the (unquoted) value of label key in a label list, "" if absent.
func labelValue(labels, key string) string {
	for _, p := range splitLabels(labels) {
		if k, v, ok := strings.Cut(p, "="); ok && k == key {
			if s, err := strconv.Unquote(v); err == nil {
				return s
			}
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// splitLabels splits a label list at the commas outside quoted values.
func splitLabels(labels string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(labels); i++ {
		switch labels[i] {
		case '\\':
			i++
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, strings.TrimSpace(labels[start:i]))
				start = i + 1
			}
		}
	}
	if s := strings.TrimSpace(labels[start:]); s != "" {
		out = append(out, s)
	}
	return out
}

// FetchPathBytes is a sample of Gregor's fetch byte counters.
type FetchPathBytes struct {
	Sendfile float64
	Copy     float64
}

// FetchPaths reads Gregor's fetch byte counters from a scrape; found is false when the
// page has no such counter — the broker is not Gregor (or too old to say).
func (m Metrics) FetchPaths() (b FetchPathBytes, found bool) {
	var f1, f2 bool
	b.Sendfile, f1 = m.Sum(fetchBytesMetric, `path="sendfile"`)
	b.Copy, f2 = m.Sum(fetchBytesMetric, `path="copy"`)
	return b, f1 || f2
}

// ScrapeFetchPaths reads Gregor's /metrics page at url and returns its fetch byte
// counters (see Metrics.FetchPaths).
func ScrapeFetchPaths(ctx context.Context, url string) (b FetchPathBytes, found bool, err error) {
	m, err := ScrapeMetrics(ctx, url)
	if err != nil {
		return b, false, err
	}
	b, found = m.FetchPaths()
	return b, found, nil
}

// parseFetchPaths sums the samples of fetchBytesMetric by their path label in a
// Prometheus text exposition.
func parseFetchPaths(r io.Reader) (b FetchPathBytes, found bool) {
	return ParseMetrics(r).FetchPaths()
}

// ZeroCopy is the share of fetched bytes Gregor sent with sendfile during a run.
type ZeroCopy struct {
	SendfileBytes float64 `json:"sendfileBytes"`
	CopyBytes     float64 `json:"copyBytes"`
	// Share is SendfileBytes / (SendfileBytes + CopyBytes), 0 when nothing was fetched.
	Share float64 `json:"share"`
}

// ZeroCopyBetween is the zero-copy share of the fetches between two samples.
func ZeroCopyBetween(a, b FetchPathBytes) *ZeroCopy {
	z := &ZeroCopy{SendfileBytes: b.Sendfile - a.Sendfile, CopyBytes: b.Copy - a.Copy}
	if t := z.SendfileBytes + z.CopyBytes; t > 0 {
		z.Share = z.SendfileBytes / t
	}
	return z
}
