// Command gregor-cp will be the control-plane node: an embedded etcd member plus the
// controller and group coordinator. The program arrives with the control-plane issue;
// `make build` skips this folder until then.
package main
