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

// metricsBodyMax bounds how much of a /metrics page is read.
const metricsBodyMax = 8 << 20

// FetchPathBytes is a sample of Gregor's fetch byte counters.
type FetchPathBytes struct {
	Sendfile float64
	Copy     float64
}

// ScrapeFetchPaths reads Gregor's /metrics page at url and returns its fetch byte
// counters. found is false when the page answers but has no such counter — the broker is
// not Gregor (or too old to say).
func ScrapeFetchPaths(ctx context.Context, url string) (b FetchPathBytes, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return b, false, fmt.Errorf("perf: metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return b, false, fmt.Errorf("perf: metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return b, false, fmt.Errorf("perf: metrics: %s: %s", url, resp.Status)
	}
	b, found = parseFetchPaths(io.LimitReader(resp.Body, metricsBodyMax))
	return b, found, nil
}

// parseFetchPaths sums the samples of fetchBytesMetric by their path label in a
// Prometheus text exposition.
func parseFetchPaths(r io.Reader) (b FetchPathBytes, found bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, fetchBytesMetric+"{") {
			continue
		}
		end := strings.IndexByte(line, '}')
		if end < 0 {
			continue
		}
		labels, rest := line[len(fetchBytesMetric)+1:end], strings.Fields(line[end+1:])
		if len(rest) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(rest[0], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(labels, `path="sendfile"`):
			b.Sendfile += v
			found = true
		case strings.Contains(labels, `path="copy"`):
			b.Copy += v
			found = true
		}
	}
	return b, found
}

// ZeroCopy is the share of fetched bytes Gregor sent with sendfile during a run.
type ZeroCopy struct {
	SendfileBytes float64 `json:"sendfileBytes"`
	CopyBytes     float64 `json:"copyBytes"`
	// Share is SendfileBytes / (SendfileBytes + CopyBytes), 0 when nothing was fetched.
	Share float64 `json:"share"`
}

func zeroCopyBetween(a, b FetchPathBytes) *ZeroCopy {
	z := &ZeroCopy{SendfileBytes: b.Sendfile - a.Sendfile, CopyBytes: b.Copy - a.Copy}
	if t := z.SendfileBytes + z.CopyBytes; t > 0 {
		z.Share = z.SendfileBytes / t
	}
	return z
}
