package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// row is one figure of the record.
type row struct {
	section, what, measured, baseline, ratio, target, verdict string
}

// table is the record: its rows in the order they were added.
type table struct {
	rows []row
}

// add appends r to the table.
func (t *table) add(r row) {
	t.rows = append(t.rows, r)
}

// print writes the table to w, a header and a rule, then a line a row,
// each column as wide as its widest cell and two spaces apart; an empty
// baseline, ratio, target or verdict prints as "-".
func (t *table) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "section\tfigure\tmeasured\tbaseline (same run)\tratio\ttarget\tmet")
	fmt.Fprintln(tw, strings.Repeat("-", 7)+"\t"+strings.Repeat("-", 6)+"\t"+strings.Repeat("-", 8)+"\t"+strings.Repeat("-", 19)+"\t-----\t------\t---")
	for _, r := range t.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.section, r.what, r.measured, dash(r.baseline), dash(r.ratio), dash(r.target), dash(r.verdict))
	}
	tw.Flush()
}

// dash returns s, or "-" when s is empty.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// verdict returns "yes" if ok and "NO" otherwise.
func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

// ratio returns how many times fewer measured is than baseline, as
// "12x fewer", or "-" when measured is zero.
func ratio(baseline, measured int) string {
	if measured == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fx fewer", float64(baseline)/float64(measured))
}

// ms returns d rounded to the millisecond.
func ms(d time.Duration) string {
	return d.Round(time.Millisecond).String()
}
