package main

// Output: text tables with aligned columns (as rpk prints them), or JSON (--format json)
// for scripts: one document per command, fields named as in Kafka's own tools.

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// table writes rows of aligned columns: upper-case headers, two spaces between columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	if len(headers) > 0 {
		t.row(anys(headers)...)
	}
	return t
}

func anys(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}

// row writes one row; each column is printed with %v.
func (t *table) row(cols ...any) {
	for i, c := range cols {
		if i > 0 {
			fmt.Fprint(t.tw, "\t")
		}
		fmt.Fprint(t.tw, c)
	}
	fmt.Fprint(t.tw, "\n")
}

func (t *table) flush() { _ = t.tw.Flush() }

// section writes a heading over a block of text output, as rpk's describe does.
func section(w io.Writer, first bool, name string) {
	if !first {
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, name)
	fmt.Fprintln(w, strings.Repeat("=", len(name)))
}

// writeRows prints a command's answer, one entry a row: with --format json the rows as
// they are, else a table under headers with each row's columns as cols gives them. The
// list commands and the per-item results answer alike.
func writeRows[T any](g *globals, rows []T, headers []string, cols func(T) []any) error {
	if g.json() {
		return writeJSON(g.stdout, rows)
	}
	t := newTable(g.stdout, headers...)
	for _, r := range rows {
		t.row(cols(r)...)
	}
	t.flush()
	return nil
}

// writeViews prints a describe command's documents, one per item: with --format json
// an array of them, else each as write prints it, a blank line between two. failed
// (an item was not found, and said so on stderr) makes it return errReported.
func writeViews[T any](g *globals, views []T, write func(*globals, T), failed bool) error {
	if g.json() {
		if views == nil {
			views = []T{} // JSON: [], not null
		}
		if err := writeJSON(g.stdout, views); err != nil {
			return err
		}
	} else {
		for i, v := range views {
			if i > 0 {
				fmt.Fprintln(g.stdout)
			}
			write(g, v)
		}
	}
	if failed {
		return errReported
	}
	return nil
}

// statusText is an item's STATUS column: ok, or the first part of its error (the whole is
// on stderr).
func statusText(errMsg, ok string) string {
	if errMsg == "" {
		return ok
	}
	s, _, _ := strings.Cut(errMsg, ":")
	return s
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// int32s prints node ids as Kafka's tools do: [1 2 3] → "1,2,3"; empty → "-".
func int32s(ids []int32) string {
	if len(ids) == 0 {
		return "-"
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.Itoa(int(id))
	}
	return strings.Join(s, ",")
}

// orDash prints an empty string as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseInt32s parses "1,2,3" into node ids.
func parseInt32s(s string) ([]int32, error) {
	var ids []int32
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.ParseInt(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q is not a node id", f)
		}
		ids = append(ids, int32(n))
	}
	return ids, nil
}
