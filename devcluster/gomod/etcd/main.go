// Command etcd is etcd's own server entry point, wrapped so that it builds
// from the Go module proxy despite the replace directives in etcd's go.mod.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
