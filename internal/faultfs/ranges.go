package faultfs

import "sort"

// span is a half-open byte range [off, end) of a file.
type span struct{ off, end int64 }

// spans is a sorted set of disjoint, non-adjacent byte ranges: the parts
// of a file written since its last fsync.
type spans []span

// add merges [off, end) into the set.
func (s spans) add(off, end int64) spans {
	if end <= off {
		return s
	}
	// Appends, the common case (logs), extend the last range.
	if n := len(s); n > 0 && off >= s[n-1].off {
		if off <= s[n-1].end {
			s[n-1].end = max(s[n-1].end, end)
			return s
		}
		return append(s, span{off, end})
	}
	// First range that ends at or after off: it and the ones after it
	// that start at or before end merge with the new one.
	i := sort.Search(len(s), func(i int) bool { return s[i].end >= off })
	j := i
	for j < len(s) && s[j].off <= end {
		off = min(off, s[j].off)
		end = max(end, s[j].end)
		j++
	}
	out := make(spans, 0, len(s)-(j-i)+1)
	out = append(out, s[:i]...)
	out = append(out, span{off, end})
	return append(out, s[j:]...)
}

// bytes is the total length of the ranges, not counting those that run
// to the end of the file (content moved by an allocation).
func (s spans) bytes() int64 {
	var n int64
	for _, r := range s {
		if r.end != toEnd {
			n += r.end - r.off
		}
	}
	return n
}
