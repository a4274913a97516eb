package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// row is one figure of the record.
type row struct {
	section, what, measured, baseline, ratio, target, verdict string
}

type table struct {
	rows []row
}

func (t *table) add(r row) {
	t.rows = append(t.rows, r)
}

func (t *table) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "section\tfigure\tmeasured\tbaseline (same run)\tratio\ttarget\tmet")
	fmt.Fprintln(tw, strings.Repeat("-", 7)+"\t"+strings.Repeat("-", 6)+"\t"+strings.Repeat("-", 8)+"\t"+strings.Repeat("-", 19)+"\t-----\t------\t---")
	for _, r := range t.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.section, r.what, r.measured, dash(r.baseline), dash(r.ratio), dash(r.target), dash(r.verdict))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}
