package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"
)

// backdate rewrites objects' metadata.creationTimestamp where the API server keeps them, in etcd.
// No request through the API can: the server sets it on create and carries it over on every
// update. The backtest's tests ask the live function about moments of a past day, so its pods must
// have existed then; an etcd restored from an older backup leaves a cluster in the same state.
//
//	controlplane backdate --etcd URL --created RFC3339 KEY...
//
// A KEY is the object's storage key, /registry/pods/NAMESPACE/NAME. Each object is decoded and
// encoded again with Kubernetes' own protobuf codec, and written only if nobody wrote it since it
// was read (a compare on its mod revision; the node simulator updates pods' status meanwhile). The
// API server's watch cache sees the write as any other modification.
func backdate(args []string) {
	flags := flag.NewFlagSet("backdate", flag.ExitOnError)
	endpoint := flags.String("etcd", "", "etcd's client URL (ready.json's etcd)")
	created := flags.String("created", "", "the creation time to write (RFC 3339)")
	must(flags.Parse(args), "read the flags")
	at, err := time.Parse(time.RFC3339, *created)
	must(err, "read --created")
	if *endpoint == "" || flags.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: controlplane backdate --etcd URL --created RFC3339 KEY...")
		os.Exit(2)
	}
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{*endpoint}, DialTimeout: 10 * time.Second})
	must(err, "connect to etcd")
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, key := range flags.Args() {
		must(backdateOne(ctx, client, key, metav1.NewTime(at)), "backdate "+key)
	}
}

// backdateOne reads, rewrites and conditionally writes one key, reading it again whenever another
// write got there first.
func backdateOne(ctx context.Context, client *clientv3.Client, key string, created metav1.Time) error {
	codec := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	for {
		got, err := client.Get(ctx, key)
		if err != nil {
			return err
		}
		if len(got.Kvs) == 0 {
			return fmt.Errorf("no such key in etcd")
		}
		stored := got.Kvs[0]
		object, kind, err := codec.Decode(stored.Value, nil, nil)
		if err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		accessor, err := meta.Accessor(object)
		if err != nil {
			return err
		}
		accessor.SetCreationTimestamp(created)
		var encoded bytes.Buffer
		if err := scheme.Codecs.EncoderForVersion(codec, kind.GroupVersion()).Encode(object, &encoded); err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		written, err := client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", stored.ModRevision)).
			Then(clientv3.OpPut(key, encoded.String())).
			Commit()
		if err != nil {
			return err
		}
		if written.Succeeded {
			return nil
		}
	}
}
