package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gregor-streaming/gregor/internal/testutil"
)

// kafkajsModules is where scripts/install-kafkajs.sh (which `make test` runs) installs
// KafkaJS, from this package's directory.
const kafkajsModules = "../../.cache/kafkajs/node_modules"

// TestKafkaJS: KafkaJS (Node.js) against real gregor-cp and gregor-dp processes
// (testdata/kafkajs/client.js): keyed records with headers produced idempotently with
// acks=all (one send gzip-compressed) and with acks=1; a transactional producer's
// committed transaction, aborted transaction, and committed transaction carrying a
// group's offset (sendOffsets); read back by a group member at read_committed and by
// one at read_uncommitted. Each reads every record it may see once, byte-exact, keys
// confined to one partition in production order; only read_uncommitted sees the
// aborted transaction; the group's offset is the one committed in the transaction.
func TestKafkaJS(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node missing: a fresh machine has Node.js")
	}
	modules, err := filepath.Abs(kafkajsModules)
	if err != nil {
		t.Fatal(err)
	}
	_, err = os.Stat(filepath.Join(modules, "kafkajs", "package.json"))
	testutil.NeedDep(t, err, "scripts/install-kafkajs.sh installs KafkaJS")
	addr := startProcessCluster(t)
	cmd := exec.Command(node, "testdata/kafkajs/client.js", addr, "kjs")
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kafkajs client: %v\n%s", err, out)
	}
	var plain, committed []want
	plain = append(plain, wantRecords("acksall", 30)...)
	plain = append(plain, wantRecords("gzip", 10)...)
	plain = append(plain, wantRecords("acks1", 30)...)
	committed = append(committed, wantRecords("committed", 12)...)
	committed = append(committed, wantRecords("eos", 6)...)
	read := map[string][]got{}
	offsets := map[string]string{}
	done := false
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		switch {
		case f[0] == "DONE":
			done = true
		case f[0] == "OFFSET" && len(f) == 4:
			offsets[f[1]+"/"+f[2]] = f[3]
		case f[0] == "REC" && len(f) == 7:
			g := got{want: want{key: f[2], value: f[3], header: f[4]}}
			if _, err := fmt.Sscan(f[5], &g.partition); err != nil {
				t.Fatalf("kafkajs line %q: %v", line, err)
			}
			if _, err := fmt.Sscan(f[6], &g.offset); err != nil {
				t.Fatalf("kafkajs line %q: %v", line, err)
			}
			read[f[1]] = append(read[f[1]], g)
		default:
			t.Fatalf("kafkajs line %q\n%s", line, out)
		}
	}
	if !done {
		t.Fatalf("kafkajs client did not finish\n%s", out)
	}
	t.Run("read_committed", func(t *testing.T) {
		checkReadBack(t, append(slices.Clone(plain), committed...), read["read_committed"])
	})
	t.Run("read_uncommitted", func(t *testing.T) {
		all := append(append(slices.Clone(plain), committed[:12]...), wantRecords("aborted", 12)...)
		all = append(all, committed[12:]...)
		checkReadBack(t, all, read["read_uncommitted"])
	})
	// The transaction's offset for partition 0 only; the other partitions have none.
	for p, want := range map[string]string{"0": "5", "1": "-1", "2": "-1"} {
		if got := offsets["kjs-eos/"+p]; got != want {
			t.Errorf("group kjs-eos's offset on partition %s: %q, want %s (committed in the transaction)", p, got, want)
		}
	}
}
