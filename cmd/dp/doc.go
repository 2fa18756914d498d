// Command gregor-dp will be the data-plane node: it serves the Kafka protocol on
// --listen (default 127.0.0.1:9092), keeps partition logs under --data-dir, registers
// with the control plane given by --cp and serves metrics and health on --http. The
// program arrives with the data-plane issue; `make build` skips this folder until then.
package main
