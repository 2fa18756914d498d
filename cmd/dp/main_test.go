package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// dpBinary is gregor-dp built once for the process-level tests.
var dpBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gregor-dp-test")
	if err != nil {
		panic(err)
	}
	dpBinary = filepath.Join(dir, "gregor-dp")
	if out, err := exec.Command("go", "build", "-race", "-o", dpBinary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build gregor-dp: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// checkFor polls f until it returns nil or the timeout passes.
func checkFor(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dpProcess runs gregor-dp as a child process.
type dpProcess struct {
	t                     *testing.T
	args                  []string
	listen, httpAddr, dir string
	cmd                   *exec.Cmd
}

func (p *dpProcess) start() {
	p.t.Helper()
	p.cmd = exec.Command(dpBinary, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = os.Stderr, os.Stderr
	if testing.Verbose() == false {
		p.cmd.Stdout, p.cmd.Stderr = io.Discard, io.Discard
	}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	checkFor(p.t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + p.httpAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
}

func (p *dpProcess) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_, _ = p.cmd.Process.Wait()
}

// startCP runs a one-member control plane in the test process (real embedded etcd).
func startCP(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := freeAddr(t)
	cp, err := controlplane.Start(ctx, controlplane.Config{
		Name: "cp1", DataDir: filepath.Join(t.TempDir(), "etcd"), ClientAddr: addr, PeerAddr: freeAddr(t),
		TickMs: 10, ElectionMs: 100, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Close)
	return addr
}

func newDP(t *testing.T, cpAddr string, id int) *dpProcess {
	p := &dpProcess{t: t, listen: freeAddr(t), httpAddr: freeAddr(t), dir: t.TempDir()}
	p.args = []string{"--id", strconv.Itoa(id), "--data-dir", p.dir, "--listen", p.listen, "--cp", cpAddr, "--http", p.httpAddr}
	t.Cleanup(p.kill)
	return p
}

// TestCrashUnderLoad SIGKILLs the node while franz-go produces with acks=all, restarts
// it on the same data directory, and reads back every acknowledged record (the storage
// engine recovers the logs; the page cache kept what was written).
func TestCrashUnderLoad(t *testing.T) {
	cpAddr := startCP(t)
	dp := newDP(t, cpAddr, 1)
	dp.start()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(dp.listen))
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := kadm.NewClient(admCl).CreateTopics(ctx, 2, 1, nil, "crash"); err != nil || resp["crash"].Err != nil {
		t.Fatalf("create: %v %+v", err, resp)
	}
	admCl.Close()

	producer, err := kgo.NewClient(kgo.SeedBrokers(dp.listen), kgo.RecordRetries(0), kgo.ProduceRequestTimeout(2*time.Second),
		kgo.RequestRetries(0), kgo.DisableIdempotentWrite())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			v := fmt.Sprintf("record-%06d", i)
			producer.Produce(ctx, &kgo.Record{Topic: "crash", Key: []byte(strconv.Itoa(i % 7)), Value: []byte(v)}, func(r *kgo.Record, err error) {
				if err == nil {
					mu.Lock()
					acked[string(r.Value)] = true
					mu.Unlock()
				}
			})
			if i%200 == 199 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	checkFor(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 2000 {
			return fmt.Errorf("%d acked", len(acked))
		}
		return nil
	})
	dp.kill()
	close(stop)
	wg.Wait()
	producer.Close()
	mu.Lock()
	nAcked := len(acked)
	mu.Unlock()
	t.Logf("%d records acknowledged before SIGKILL", nAcked)

	dp.start() // same id, same data directory: waits out the old registration
	consumer, err := kgo.NewClient(kgo.SeedBrokers(dp.listen), kgo.ConsumeTopics("crash"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	seen := map[string]bool{}
	missing := nAcked
	for missing > 0 {
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		fs := consumer.PollFetches(pctx)
		timedOut := pctx.Err() != nil
		pcancel()
		if timedOut {
			break
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s-%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if !seen[string(r.Value)] {
				seen[string(r.Value)] = true
				if acked[string(r.Value)] {
					missing--
				}
			}
		})
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged records lost after the crash", missing, nAcked)
	}
}
