// CoreDNS for the test world's node: the cluster DNS pods use. A minimal plugin set:
// `kubernetes` answers the world's Service names (cluster.local), `hosts` the cloud
// endpoints' and registries' real names (the world's addresses), nothing is forwarded
// (the world has no route out).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metadata"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/transfer"
)

// The order of CoreDNS's plugin.cfg, restricted to the plugins above.
var directives = []string{"metadata", "bind", "ready", "errors", "log", "transfer", "hosts", "kubernetes"}

func init() { dnsserver.Directives = directives }

func main() { coremain.Run() }
