// Reads a bftlog replica's C2SP tlog-tiles over HTTP with Go's
// golang.org/x/mod/sumdb/tlog, the reference tiles client: its
// TileHashReader fetches and authenticates the tiles against the tree
// head, then the tree hash, record proofs and a tree proof must check.
//
// Usage: tiles_reader BASE_URL SIZE ROOT_BASE64 OLD_SIZE [INDEX:LEAF_BASE64 ...]
// Prints "ok" or exits non-zero with the reason.
package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

type httpTiles struct{ base string }

func (h httpTiles) Height() int { return 8 }

// Go names hash tiles tile/8/<L>/<N>[.p/<W>]; C2SP tlog-tiles drops the
// height: tile/<L>/<N>[.p/<W>].
func (h httpTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		path := strings.Replace(t.Path(), "tile/8/", "tile/", 1)
		resp, err := http.Get(h.base + "/" + path)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("%s: HTTP %d", path, resp.StatusCode)
		}
		out[i] = body
	}
	return out, nil
}

func (h httpTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

func hash(text string) tlog.Hash {
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(raw) != tlog.HashSize {
		fail("bad hash %q", text)
	}
	var h tlog.Hash
	copy(h[:], raw)
	return h
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 5 {
		fail("usage: tiles_reader BASE_URL SIZE ROOT_BASE64 OLD_SIZE [INDEX:LEAF_BASE64 ...]")
	}
	base := os.Args[1]
	size, err := strconv.ParseInt(os.Args[2], 10, 64)
	if err != nil {
		fail("size: %v", err)
	}
	root := hash(os.Args[3])
	old, err := strconv.ParseInt(os.Args[4], 10, 64)
	if err != nil {
		fail("old size: %v", err)
	}
	reader := tlog.TileHashReader(tlog.Tree{N: size, Hash: root}, httpTiles{base})
	got, err := tlog.TreeHash(size, reader)
	if err != nil {
		fail("tree hash: %v", err)
	}
	if got != root {
		fail("tree hash %v, checkpoint root %v", got, root)
	}
	for _, arg := range os.Args[5:] {
		parts := strings.SplitN(arg, ":", 2)
		index, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil || len(parts) != 2 {
			fail("bad record %q", arg)
		}
		proof, err := tlog.ProveRecord(size, index, reader)
		if err != nil {
			fail("prove record %d: %v", index, err)
		}
		if err := tlog.CheckRecord(proof, size, root, index, hash(parts[1])); err != nil {
			fail("check record %d: %v", index, err)
		}
	}
	oldHash, err := tlog.TreeHash(old, reader)
	if err != nil {
		fail("old tree hash: %v", err)
	}
	proof, err := tlog.ProveTree(size, old, reader)
	if err != nil {
		fail("prove tree: %v", err)
	}
	if err := tlog.CheckTree(proof, size, root, old, oldHash); err != nil {
		fail("check tree: %v", err)
	}
	fmt.Println("ok")
}
