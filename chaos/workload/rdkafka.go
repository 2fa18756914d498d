package workload

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// PythonConfluentKafka is where Debian's python3-confluent-kafka puts the module the
// Librdkafka producer needs; tests skip that producer when it is missing.
const PythonConfluentKafka = "/usr/lib/python3/dist-packages/confluent_kafka/__init__.py"

// LibrdkafkaDir is the directory holding the librdkafka.so.1 the Librdkafka producer
// loads: $GREGOR_LIBRDKAFKA_DIR if set, else .cache/librdkafka at the module's root
// (found from the working directory up), where scripts/build-librdkafka.sh builds it
// (make test and make chaos run it); "" when neither has one, and the system's library
// is used (Debian bookworm: 2.0.2, whose idempotent producer can stop on a fatal error
// of its own after a possibly persisted request; fixed in 2.3.0,
// confluentinc/librdkafka#4438).
func LibrdkafkaDir() string {
	if d := os.Getenv("GREGOR_LIBRDKAFKA_DIR"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			d := filepath.Join(dir, ".cache", "librdkafka")
			if _, err := os.Stat(filepath.Join(d, "librdkafka.so.1")); err == nil {
				return d
			}
			return ""
		}
		up := filepath.Dir(dir)
		if up == dir {
			return ""
		}
		dir = up
	}
}

// rdkafkaEnv is the environment of a confluent-kafka subprocess: LibrdkafkaDir's
// library first on the loader's path.
func rdkafkaEnv() []string {
	env := os.Environ()
	if d := LibrdkafkaDir(); d != "" {
		env = append(env, "LD_LIBRARY_PATH="+strings.TrimSuffix(d+":"+os.Getenv("LD_LIBRARY_PATH"), ":"))
	}
	return env
}

// RdkafkaLibVersion is the version of the librdkafka the Librdkafka producer loads, as
// confluent-kafka reports it.
func RdkafkaLibVersion() (string, error) {
	cmd := exec.Command("/usr/bin/python3", "-c", "import confluent_kafka; print(confluent_kafka.libversion()[0])")
	cmd.Env = rdkafkaEnv()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("workload: confluent-kafka's librdkafka version: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// rdkafkaScript produces "<prefix>-<n>" to the partitions of a topic in turn with
// confluent-kafka (librdkafka), idempotent and acks=all, at a rate, for a duration or
// until its standard input closes; it reads nothing else. It prints one JSON line per
// delivery report: {"v": value, "p": partition, "o": offset, "e": error or "", "s":
// send time, "t": report time} (times in Unix seconds; o -1 when librdkafka acknowledged
// the record without learning its offset); records still undelivered when
// the final flush gives up are reported with e "undelivered"; the last line is
// {"done": n}.
const rdkafkaScript = `
import sys, json, time, threading
from confluent_kafka import Producer
addr, topic, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
parts, rate, duration, timeout_ms = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
stop = threading.Event()
def watch():
    sys.stdin.read()
    stop.set()
threading.Thread(target=watch, daemon=True).start()
started = {}
out = sys.stdout
def report(err, msg):
    v = msg.value().decode()
    s = started.pop(v, 0)
    # An offset librdkafka does not know (a message it acknowledged because a later batch
    # of the producer was, after its own request failed) comes as None: reported as -1.
    o = msg.offset() if err is None else None
    out.write(json.dumps({"v": v, "p": msg.partition(), "o": -1 if o is None or o < 0 else o,
                          "e": "" if err is None else str(err), "s": s, "t": time.time()}) + "\n")
p = Producer({"bootstrap.servers": addr, "acks": "all", "enable.idempotence": True,
              "message.timeout.ms": timeout_ms, "linger.ms": 2, "error_cb": lambda e: None})
i = 0
t0 = time.time()
interval = 1.0 / rate
while not stop.is_set() and (duration <= 0 or time.time() - t0 < duration):
    due = t0 + i * interval
    now = time.time()
    if due > now:
        p.poll(min(due - now, 0.05))
        continue
    v = "%s-%d" % (prefix, i)
    try:
        started[v] = time.time()
        p.produce(topic, value=v.encode(), partition=i % parts, on_delivery=report)
    except BufferError:
        started.pop(v, None)
        p.poll(0.05)
        continue
    i += 1
    p.poll(0)
p.flush(timeout_ms / 1000.0 + 5)
for v, s in list(started.items()):
    out.write(json.dumps({"v": v, "p": int(v.rsplit("-", 1)[1]) % parts, "o": -1, "e": "undelivered",
                          "s": s, "t": time.time()}) + "\n")
out.write(json.dumps({"done": i}) + "\n")
out.flush()
`

type rdkafkaReport struct {
	Value     string   `json:"v"`
	Partition int32    `json:"p"`
	Offset    int64    `json:"o"`
	Err       string   `json:"e"`
	Sent      float64  `json:"s"`
	Reported  float64  `json:"t"`
	Done      *float64 `json:"done"`
}

func unixTime(f float64) time.Time {
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9))
}

// startRdkafka runs the script. Its delivery reports become sends; its errors are info
// sends (an idempotent producer retries, so a failed record may have been written by
// an earlier attempt). When ctx ends the process is killed and the sends it had not
// reported are lost to the history: they were info sends at best.
func (p *Producer) startRdkafka(ctx context.Context) error {
	cmd := exec.Command("/usr/bin/python3", "-c", rdkafkaScript, strings.Join(p.cfg.Brokers, ","), p.cfg.Topic, p.cfg.Name,
		strconv.Itoa(int(p.cfg.Partitions)), strconv.FormatFloat(p.cfg.Rate, 'f', -1, 64),
		strconv.FormatFloat(p.cfg.Duration.Seconds(), 'f', -1, 64), strconv.Itoa(int(p.cfg.Timeout.Milliseconds())))
	cmd.Env = rdkafkaEnv()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("workload: start confluent-kafka producer: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		select {
		case <-p.stop:
			_ = stdin.Close()
		case <-ctx.Done():
			_ = cmd.Process.Kill()
		case <-exited:
		}
	}()
	go func() {
		defer close(p.done)
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sawDone := false
		for sc.Scan() {
			var r rdkafkaReport
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				continue
			}
			if r.Done != nil {
				sawDone = true
				continue
			}
			s := p.send(r.Partition, r.Value, unixTime(r.Sent))
			s.End = unixTime(r.Reported)
			if r.Err == "" {
				s.Outcome, s.Offset = history.OK, r.Offset
			} else {
				s.Outcome, s.Err = history.Info, r.Err
			}
			p.rec.Send(s)
		}
		werr := cmd.Wait()
		if !sawDone && ctx.Err() == nil {
			p.err = fmt.Errorf("workload: confluent-kafka producer %s ended without its last line: %v\n%s", p.cfg.Name, werr, stderr.String())
		}
	}()
	return nil
}
