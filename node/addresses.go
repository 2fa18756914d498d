package node

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// AddressesFileName is the file, in a node's data directory (gregor-dp's --data-dir,
// gregor-cp's --data-dir), where the command writes the addresses it bound, once it
// serves: a node started with port 0 tells whoever started it (the cluster harness, a
// script) where it listens. The file is written atomically (a temporary file renamed
// over it), so a reader sees a whole document or none; it is rewritten by every start of
// the node and holds the writing process's id, by which a reader tells this start's file
// from an earlier one's. See docs/nodes.md.
const AddressesFileName = "addresses.json"

// Addresses is the addresses file's JSON document. A field the node does not have (a
// data-plane node has no etcd peer address) is left out.
type Addresses struct {
	// PID is the process that wrote the file.
	PID int `json:"pid"`
	// Kafka is a data-plane node's bound Kafka listener; Advertised is the address it
	// registered for clients.
	Kafka      string `json:"kafka,omitempty"`
	Advertised string `json:"advertised,omitempty"`
	// HTTP is the bound HTTP listener (/metrics, /healthz, /readyz).
	HTTP string `json:"http,omitempty"`
	// Client and Peer are a control-plane node's bound etcd client and peer listeners;
	// Listen is its internal (group coordination) listener.
	Client string `json:"client,omitempty"`
	Peer   string `json:"peer,omitempty"`
	Listen string `json:"listen,omitempty"`
}

// WriteAddresses writes a to dir's addresses file, atomically and durably.
func WriteAddresses(dir string, a Addresses) error {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileSynced(dir, AddressesFileName, append(b, '\n')); err != nil {
		return fmt.Errorf("node: write %s: %w", AddressesFileName, err)
	}
	return nil
}

// ReadAddresses reads dir's addresses file (an error wrapping os.ErrNotExist while
// there is none).
func ReadAddresses(dir string) (Addresses, error) {
	var a Addresses
	b, err := os.ReadFile(filepath.Join(dir, AddressesFileName))
	if err != nil {
		return a, err
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("node: %s: %w", AddressesFileName, err)
	}
	return a, nil
}

// Addresses returns the node's addresses, as its addresses file holds them.
func (d *DataPlane) Addresses() Addresses {
	return Addresses{PID: os.Getpid(), Kafka: d.addr, Advertised: d.advertise, HTTP: d.HTTPAddr()}
}
