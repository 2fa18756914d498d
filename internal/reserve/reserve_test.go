package reserve

import (
	"net"
	"testing"
)

// TestReservation checks the two promises: the reserved port's own listener binds it,
// and nobody else does while the reservation and that listener hold it.
func TestReservation(t *testing.T) {
	r, err := TCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, port, _ := net.SplitHostPort(r.Addr())
	if port == "0" {
		t.Fatalf("Addr = %s, want a picked port", r.Addr())
	}
	for range 200 { // a bind to port 0 never gets the reserved port
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		got := ln.Addr().String()
		ln.Close()
		if got == r.Addr() {
			t.Fatalf("net.Listen(:0) got the reserved %s", got)
		}
	}
	ln, err := net.Listen("tcp", r.Addr())
	if err != nil {
		t.Fatalf("the reservation's listener: %v", err)
	}
	defer ln.Close()
	if other, err := net.Listen("tcp", r.Addr()); err == nil {
		other.Close()
		t.Fatal("a second listener bound the reserved address")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatalf("dial the listener after the reservation closed: %v", err)
	}
	c.Close()
}
