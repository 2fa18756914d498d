package replica

import (
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/gregor-streaming/gregor/internal/testutil"
)

// TestRestoredHighWatermarkRule: the node's own checkpoint first, else the control
// plane's if the log holds its leader epoch or a later one, always within [log start,
// log end].
func TestRestoredHighWatermarkRule(t *testing.T) {
	hint := func(epoch int32, hw int64) HighWatermarkHint {
		return HighWatermarkHint{LeaderEpoch: epoch, HighWatermark: hw}
	}
	for _, tc := range []struct {
		name        string
		local       int64
		hasLocal    bool
		hint        HighWatermarkHint
		hasHint     bool
		start, end  int64
		latestEpoch int32
		want        int64
	}{
		{"nothing: log start", 0, false, HighWatermarkHint{}, false, 3, 10, 2, 3},
		{"own checkpoint", 7, true, hint(2, 9), true, 0, 10, 2, 7},
		{"own checkpoint past a log cut short by a crash", 12, true, HighWatermarkHint{}, false, 0, 10, 2, 10},
		{"own checkpoint below the log start", 1, true, HighWatermarkHint{}, false, 4, 10, 2, 4},
		{"hint of the log's latest epoch", 0, false, hint(2, 9), true, 0, 10, 2, 9},
		{"hint of an earlier epoch", 0, false, hint(1, 9), true, 0, 10, 2, 9},
		{"hint past the log end", 0, false, hint(2, 15), true, 0, 10, 2, 10},
		{"hint of an epoch the log lacks", 0, false, hint(3, 9), true, 0, 10, 2, 0},
		{"hint for an empty log", 0, false, hint(0, 9), true, 0, 0, -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := restoredHighWatermark(tc.local, tc.hasLocal, tc.hint, tc.hasHint, tc.start, tc.end, tc.latestEpoch)
			if got != tc.want {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}
}

// TestHighWatermarkRestoredAtOpen: a leader whose ISR holds a follower keeps its high
// watermark across a restart (the checkpoint file written at Close), a replica with no
// checkpoint of its own takes the control plane's hint, and the checkpoint file keeps
// the entries of replicas not open yet.
func TestHighWatermarkRestoredAtOpen(t *testing.T) {
	dir := t.TempDir()
	st := leaderState(3, local, 2)
	m := NewManager(Config{Dir: dir, NodeID: local, Logger: testutil.Quiet()})
	p := lead(t, m, "t", st)
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 5, 0)))
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 5, 1)
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 3, 0)))
	if hw := p.HighWatermark(); hw != 5 {
		t.Fatalf("high watermark %d, want 5", hw)
	}
	if _, err := m.MakeLeader("u", 1, leaderState(1, local), nil, logConfig); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	// Restarted, a new leader epoch, the follower not fetched yet.
	m2 := newManager(t, dir)
	st.LeaderEpoch = 4
	p2 := lead(t, m2, "t", st)
	if hw := p2.HighWatermark(); hw != 5 {
		t.Fatalf("high watermark after the restart %d, want 5", hw)
	}
	// u-1 is not open: the checkpoint keeps its entry.
	if err := m2.CheckpointHighWatermarks(); err != nil {
		t.Fatal(err)
	}
	hws, err := readHWCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]map[int32]int64{"t": {0: 5}, "u": {1: 0}}; !maps.EqualFunc(hws, want, maps.Equal) {
		t.Fatalf("checkpoint %v, want %v", hws, want)
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}

	// No checkpoint of its own: the control plane's hint, as far as the log goes, if
	// the log holds its epoch.
	if err := os.Remove(filepath.Join(dir, hwCheckpointFile)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		hint HighWatermarkHint
		want int64
	}{
		{"hint", HighWatermarkHint{LeaderEpoch: 3, HighWatermark: 7}, 7},
		{"hint past the log end", HighWatermarkHint{LeaderEpoch: 3, HighWatermark: 70}, 8},
		{"hint of an epoch the log lacks", HighWatermarkHint{LeaderEpoch: 9, HighWatermark: 7}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t, dir)
			m.SetHighWatermarkHints(map[string]map[int32]HighWatermarkHint{"t": {0: tc.hint}})
			fst := leaderState(5, 2, local)
			fst.Leader = 2
			f, err := m.Follow("t", 0, fst, nil, logConfig)
			if err != nil {
				t.Fatal(err)
			}
			if hw := f.HighWatermark(); hw != tc.want {
				t.Fatalf("follower's high watermark %d, want %d", hw, tc.want)
			}
			checkInvariants(t, f)
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(dir, hwCheckpointFile)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestHWCheckpointFileRoundTrip: what is written is read back; damage is an error,
// not a guess.
func TestHWCheckpointFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	want := map[string]map[int32]int64{"a": {0: 1, 1: 99}, "b.c-d_e": {7: 0}}
	if err := writeHWCheckpoint(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := readHWCheckpoint(dir)
	if err != nil || !maps.EqualFunc(got, want, maps.Equal) {
		t.Fatalf("read back %v, %v", got, err)
	}
	for _, bad := range []string{"1\n0\n", "0\n2\na 0 1\n", "0\n1\na x 1\n", "0\n1\na 0 -1\n", "0\n-1\n"} {
		if err := os.WriteFile(filepath.Join(dir, hwCheckpointFile), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readHWCheckpoint(dir); err == nil {
			t.Fatalf("%q read without error", bad)
		}
	}
}
