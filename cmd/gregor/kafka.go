package main

// The Kafka side of the operator commands: franz-go clients bounded so that an
// unreachable cluster is reported in seconds, and Kafka's errors turned into messages
// that name the error and say what to do.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// seeds returns the --brokers list.
func (g *globals) seeds() ([]string, error) {
	var out []string
	for _, s := range strings.Split(g.brokers, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, usageErrorf("--brokers: %q is not host:port", s)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, usageErrorf("--brokers is empty")
	}
	return out, nil
}

// reachable dials every seed broker at once and returns nil as soon as one accepts a
// connection. franz-go would retry an unreachable seed until the command's timeout;
// this check fails within dialTimeout, with exit status 3.
func (g *globals) reachable(ctx context.Context, seeds []string) error {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	errs := make(chan error, len(seeds))
	var d net.Dialer
	for _, s := range seeds {
		go func() {
			c, err := d.DialContext(ctx, "tcp", s)
			if err == nil {
				c.Close()
			}
			errs <- err
		}()
	}
	var first error
	for range seeds {
		if err := <-errs; err == nil {
			return nil
		} else if first == nil {
			first = err
		}
	}
	return unreachablef("no broker answers at %s (%v); is the cluster up (make run)? Point --brokers or %s at it",
		g.brokers, unwrapNet(first), envBrokers)
}

// unwrapNet shortens a dial error to its cause ("connection refused").
func unwrapNet(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// kafka holds the command's clients, made on first use and closed when it ends.
type kafka struct {
	once sync.Once
	cl   *kgo.Client
	adm  *kadm.Client
	err  error
}

// clientOpts are the options every client of the CLI takes.
func (g *globals) clientOpts(seeds []string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(seeds...),
		kgo.ClientID("gregor-cli"),
		kgo.DialTimeout(dialTimeout),
		// A request retried past the command's timeout helps no one; a broadcast's piece
		// for a node that went down is not worth waiting for (broadcastRetryTimeout).
		kgo.RetryTimeoutFn(func(key int16) time.Duration {
			if broadcastKeys[key] {
				return min(broadcastRetryTimeout, g.timeout)
			}
			return g.timeout
		}),
		// franz-go takes a connection closed before its first answer for a TLS or SASL
		// mismatch and does not retry; Gregor has neither, and such a close comes from a
		// node going down (or a proxy before a dead one): retry on another broker.
		kgo.AlwaysRetryEOF(),
	}
}

// broadcastKeys are the requests kadm sends to every node of the metadata
// (ListGroups, ListTransactions, and DescribeLogDirs for every node): a node that went
// down and is still listed (its registration not expired yet, or a proxy in front of it
// still accepting connections) gets the request retried until broadcastRetryTimeout,
// the rest of the answer (broadcastErr) being what the other nodes said.
var broadcastKeys = map[int16]bool{int16(kmsg.ListGroups): true, int16(kmsg.ListTransactions): true, int16(kmsg.DescribeLogDirs): true}

// broadcastRetryTimeout bounds the retries of a broadcast's piece for one node.
const broadcastRetryTimeout = dialTimeout

// notAnswering is a node that did not answer its piece of a broadcast.
type notAnswering struct {
	Node    int32  `json:"node"`
	Request string `json:"request"`
	Error   string `json:"error"`
}

// broadcastErr splits the error of a broadcast (kadm's ShardErrors): the nodes that did
// not answer, each named on stderr, and nil when some answered; when none did, or for
// another error, err itself.
func (g *globals) broadcastErr(err error, request string) ([]notAnswering, error) {
	var se *kadm.ShardErrors
	if err == nil || !errors.As(err, &se) || se.AllFailed {
		return nil, err
	}
	var out []notAnswering
	for _, e := range se.Errs {
		na := notAnswering{Node: e.Broker.NodeID, Request: request, Error: unwrapNet(e.Err).Error()}
		out = append(out, na)
		g.warnf("node %d did not answer %s (%s): what only it knows is missing; gregor cluster health says whether it is down",
			na.Node, request, na.Error)
	}
	return out, nil
}

// newClient checks that the cluster is reachable and returns a client with opts added;
// the caller closes it.
func (g *globals) newClient(ctx context.Context, opts ...kgo.Opt) (*kgo.Client, error) {
	seeds, err := g.seeds()
	if err != nil {
		return nil, err
	}
	if err := g.reachable(ctx, seeds); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(g.clientOpts(seeds), opts...)...)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	return cl, nil
}

// admin returns the command's admin client (one per command), made on first use.
func (g *globals) admin(ctx context.Context) (*kadm.Client, error) {
	g.kafka.once.Do(func() {
		g.kafka.cl, g.kafka.err = g.newClient(ctx)
		if g.kafka.err == nil {
			g.kafka.adm = kadm.NewClient(g.kafka.cl)
			g.kafka.adm.SetTimeoutMillis(int32(g.timeout.Milliseconds()))
		}
	})
	return g.kafka.adm, g.kafka.err
}

// close closes the clients the command made.
func (g *globals) close() {
	if g.kafka.cl != nil {
		g.kafka.cl.Close()
	}
}

// requestErr turns the error of a whole request (not of one item in its answer) into the
// command's error: an unreachable cluster exits 3, a timeout names --timeout.
func (g *globals) requestErr(err error, api string) error {
	var op *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return failf("%s: no answer within %s (--timeout)", api, g.timeout)
	case errors.Is(err, context.Canceled):
		return failf("interrupted")
	case errors.As(err, &op):
		return unreachablef("%s: %v; is the cluster up? (--brokers %s)", api, unwrapNet(err), g.brokers)
	case unsupported(err):
		return failf("UNSUPPORTED_VERSION: this cluster does not serve %s; it needs a Gregor version that does (docs/kafka-compat.md lists the APIs served)", api)
	}
	return failf("%s: %s", api, describe(err, ""))
}

// unsupported reports whether err says the broker does not serve the request's API (or
// version): franz-go refuses to send a request whose key the broker does not list.
func unsupported(err error) bool {
	return errors.Is(err, kerr.UnsupportedVersion) || (err != nil && strings.Contains(err.Error(), "broker is too old"))
}

// describe renders a Kafka error as "NAME: message": the broker's own message when it
// sent one, else the error code's description.
func describe(err error, serverMsg string) string {
	var ke *kerr.Error
	if !errors.As(err, &ke) {
		if serverMsg != "" {
			return fmt.Sprintf("%v (%s)", err, serverMsg)
		}
		return err.Error()
	}
	if serverMsg == "" {
		serverMsg = ke.Description
	}
	return ke.Message + ": " + serverMsg
}

// itemErr renders the error of one item of an answer (a topic, a partition, a group)
// as "NAME: what; hint", what and hint chosen by the caller for the errors it
// expects; unexpected errors get the broker's message.
func itemErr(err error, serverMsg, what, hint string) string {
	var ke *kerr.Error
	if !errors.As(err, &ke) {
		return describe(err, serverMsg)
	}
	if what == "" {
		return describe(err, serverMsg) + suffix("; ", hint)
	}
	if serverMsg != "" && serverMsg != ke.Description && !strings.Contains(what, serverMsg) {
		what += " (" + serverMsg + ")"
	}
	return ke.Message + ": " + what + suffix("; ", hint)
}

func suffix(sep, s string) string {
	if s == "" {
		return ""
	}
	return sep + s
}
