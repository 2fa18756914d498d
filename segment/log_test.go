package segment

import (
	"bytes"
	"testing"
)

func TestAppendReadReopen(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(clock))
	var want [][]byte
	for i := range 200 {
		b := makeBatch("k", 1+i%5, 100+i%300, clock.Ms())
		info := mustAppend(t, l, b, 3)
		if info.FirstOffset != baseOffsetOf(b) {
			t.Fatalf("append %d: first offset %d, batch says %d", i, info.FirstOffset, baseOffsetOf(b))
		}
		want = append(want, b)
	}
	if l.NumSegments() < 2 {
		t.Fatalf("expected rolls, got %d segments", l.NumSegments())
	}
	leo := l.LogEndOffset()
	check := func(l *Log) {
		t.Helper()
		got := readAll(t, l, 0, leo)
		if len(got) != len(want) {
			t.Fatalf("read %d batches, want %d", len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("batch %d differs", i)
			}
		}
	}
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	scans := segmentScans.Load()
	l = openLog(t, dir, testConfig(clock))
	if n := segmentScans.Load() - scans; n != 0 {
		t.Fatalf("clean reopen scanned %d segments", n)
	}
	if l.LogEndOffset() != leo {
		t.Fatalf("leo %d after reopen, want %d", l.LogEndOffset(), leo)
	}
	check(l)
	l.crash()
	l = openLog(t, dir, testConfig(clock))
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
