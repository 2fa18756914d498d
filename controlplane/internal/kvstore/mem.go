package kvstore

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Mem is a store in memory with the contract of Writer: requests complete in order, on
// the writer's goroutine, each whole or not at all; after Close every request fails
// with ErrNotActive. A test can hold the writer (requests queue up, as behind a slow
// etcd) and make ops fail.
type Mem struct {
	mu     sync.Mutex
	cond   *sync.Cond
	kv     map[string]string
	queue  []request
	held   bool
	busy   bool // the writer is completing a request
	closed bool
	fail   func(Op) error
	done   chan struct{}
}

// NewMem returns a running Mem holding kv (copied; nil for none).
func NewMem(kv map[string]string) *Mem {
	m := &Mem{kv: map[string]string{}, done: make(chan struct{})}
	maps.Copy(m.kv, kv)
	m.cond = sync.NewCond(&m.mu)
	go m.run()
	return m
}

// Load returns every key held.
func (m *Mem) Load(context.Context) ([]KV, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]KV, 0, len(m.kv))
	for _, k := range slices.Sorted(maps.Keys(m.kv)) {
		out = append(out, KV{Key: k, Value: []byte(m.kv[k])})
	}
	return out, nil
}

// Snapshot returns a copy of what is held.
func (m *Mem) Snapshot() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.kv)
}

// Get returns one key's value.
func (m *Mem) Get(key string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.kv[key]
	return v, ok
}

// Submit queues ops, as Writer.Submit.
func (m *Mem) Submit(ops []Op, done func(error)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		go done(ErrNotActive)
		return
	}
	m.queue = append(m.queue, request{ops: ops, done: done})
	m.cond.Broadcast()
}

// Close stops the writer; queued requests fail with ErrNotActive.
func (m *Mem) Close() {
	m.mu.Lock()
	m.closed = true
	m.cond.Broadcast()
	m.mu.Unlock()
	<-m.done
}

// Hold stops the writer before its next request; Release lets it go on.
func (m *Mem) Hold() {
	m.mu.Lock()
	m.held = true
	m.mu.Unlock()
}

// Release undoes Hold.
func (m *Mem) Release() {
	m.mu.Lock()
	m.held = false
	m.cond.Broadcast()
	m.mu.Unlock()
}

// Idle reports whether everything submitted has completed.
func (m *Mem) Idle() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.queue) == 0 && !m.busy
}

// Queued returns how many requests wait for the writer.
func (m *Mem) Queued() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.queue)
}

// SetFail makes every request holding an op that fail returns an error for fail with
// it (nil: none fails).
func (m *Mem) SetFail(fail func(Op) error) {
	m.mu.Lock()
	m.fail = fail
	m.mu.Unlock()
}

func (m *Mem) run() {
	defer close(m.done)
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		for !m.closed && (len(m.queue) == 0 || m.held) {
			m.cond.Wait()
		}
		if m.closed {
			q := m.queue
			m.queue = nil
			m.mu.Unlock()
			for _, r := range q {
				r.done(ErrNotActive)
			}
			m.mu.Lock()
			return
		}
		r := m.queue[0]
		m.queue = m.queue[1:]
		err := m.apply(r.ops)
		m.busy = true
		m.mu.Unlock()
		r.done(err) // takes the coordinator's lock: not with ours held
		m.mu.Lock()
		m.busy = false
	}
}

// apply writes ops, all or none. Called with m.mu held.
func (m *Mem) apply(ops []Op) error {
	if m.fail != nil {
		for _, o := range ops {
			if err := m.fail(o); err != nil {
				return err
			}
		}
	}
	for _, o := range ops {
		switch {
		case o.Prefix:
			for k := range m.kv {
				if strings.HasPrefix(k, o.Key) {
					delete(m.kv, k)
				}
			}
		case o.Delete:
			delete(m.kv, o.Key)
		default:
			m.kv[o.Key] = o.Value
		}
	}
	return nil
}
