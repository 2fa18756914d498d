package dataplane

// respQueue is a connection's ordered response queue: a ring that grows by doubling
// and keeps its storage, so queuing a response allocates nothing in steady state.
type respQueue struct {
	buf     []*response
	head, n int
}

func (q *respQueue) len() int { return q.n }

func (q *respQueue) push(r *response) {
	if q.n == len(q.buf) {
		grown := make([]*response, max(8, 2*len(q.buf)))
		for i := 0; i < q.n; i++ {
			grown[i] = q.buf[(q.head+i)%len(q.buf)]
		}
		q.buf, q.head = grown, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = r
	q.n++
}

// front is the oldest response; the queue must not be empty.
func (q *respQueue) front() *response { return q.buf[q.head] }

// back is the newest response; the queue must not be empty.
func (q *respQueue) back() *response { return q.buf[(q.head+q.n-1)%len(q.buf)] }

func (q *respQueue) popFront() *response {
	r := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return r
}

func (q *respQueue) popBack() *response {
	i := (q.head + q.n - 1) % len(q.buf)
	r := q.buf[i]
	q.buf[i] = nil
	q.n--
	return r
}

// at returns the i-th oldest response.
func (q *respQueue) at(i int) *response { return q.buf[(q.head+i)%len(q.buf)] }
