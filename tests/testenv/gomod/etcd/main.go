// Command etcd is the etcd server, pinned to the go.etcd.io/etcd/server/v3
// version that k8s.io/kubernetes requires (see tests/testenv/versions.env).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
