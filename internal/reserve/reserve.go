// Package reserve holds a TCP port for a listener that is bound later, so that a node
// asked for port 0 knows its port before it listens — the data-plane node registers its
// address with the control plane before its Kafka listener starts, and an etcd member
// advertises its URLs before etcd binds them — without the race of "find a free port,
// close it, hope nobody takes it" that tests used to work around by retrying.
//
// A Reservation is a socket bound with SO_REUSEADDR but never listening. On Linux a
// second socket with SO_REUSEADDR (Go's net.Listen sets it, as do gnet's WithReuseAddr
// and etcd) may bind and listen on the same address while no other socket listens there,
// and the kernel never hands a reserved port to another bind to port 0. So the listener
// that the port was reserved for binds it, and nobody else can in between. Close the
// reservation once that listener is up (or has failed): the port then belongs to it.
package reserve

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"
)

// Reservation is a reserved TCP address.
type Reservation struct {
	fd   int
	addr string
}

// TCP reserves addr (host:port; port 0 picks a free one; host must be an IP address or
// empty, which means all IPv4 addresses). Addr returns the address with the port that
// was picked.
func TCP(addr string) (*Reservation, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("reserve %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("reserve %q: port: %w", addr, err)
	}
	ip := netip.IPv4Unspecified()
	if host != "" {
		if host == "localhost" {
			host = "127.0.0.1"
		}
		if ip, err = netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("reserve %q: host must be an IP address: %w", addr, err)
		}
	}
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ip.Is4() || ip.Is4In6() {
		sa = &unix.SockaddrInet4{Port: int(port), Addr: ip.Unmap().As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(port), Addr: ip.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reserve %s: socket: %w", addr, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("reserve %s: SO_REUSEADDR: %w", addr, err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("reserve %s: bind: %w", addr, err)
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("reserve %s: getsockname: %w", addr, err)
	}
	switch b := bound.(type) {
	case *unix.SockaddrInet4:
		port = uint64(b.Port)
	case *unix.SockaddrInet6:
		port = uint64(b.Port)
	}
	return &Reservation{fd: fd, addr: net.JoinHostPort(ip.Unmap().String(), strconv.FormatUint(port, 10))}, nil
}

// Addr is the reserved address, host:port, with the port picked for port 0.
func (r *Reservation) Addr() string { return r.addr }

// Port returns the reserved port.
func (r *Reservation) Port() int {
	_, port, _ := net.SplitHostPort(r.addr)
	n, _ := strconv.Atoi(port)
	return n
}

// Close gives the port up. It is safe to call more than once.
func (r *Reservation) Close() error {
	if r == nil || r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}

// Resolve reserves addr if its port is 0 and returns the reservation (close it once the
// listener is up) and the address to bind; any other address is returned as it is, with
// a nil reservation (whose Close does nothing), so that host names and fixed ports keep
// working as they did.
func Resolve(addr string) (*Reservation, string, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", fmt.Errorf("address %q: %w", addr, err)
	}
	if port != "0" {
		return nil, addr, nil
	}
	r, err := TCP(addr)
	if err != nil {
		return nil, "", err
	}
	return r, r.Addr(), nil
}
