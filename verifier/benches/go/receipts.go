// Command receipts verifies bftlog receipts with Go's golang.org/x/mod
// sumdb note and tlog packages, as a point of comparison for
// `cargo bench -p bftlog-verify` (docs/performance.md).
//
// Usage: go run receipts.go POLICY STREAM.jsonl ROUNDS
//
// POLICY is the benchmark's policy file (only its `log` and `witness` lines
// are read; the policy requires 3 replica signatures and both witnesses).
// STREAM holds JSON lines {"entry": base64, "proof": tlog-proof text}.
// It prints receipts/s with the checkpoint verified for every receipt and
// with verified checkpoints cached by their exact bytes.
package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// cosigVerifier checks C2SP tlog-cosignature/v1 signatures (key type 0x04).
type cosigVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v *cosigVerifier) Name() string    { return v.name }
func (v *cosigVerifier) KeyHash() uint32 { return v.hash }
func (v *cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 72 {
		return false
	}
	ts := binary.BigEndian.Uint64(sig[:8])
	m := fmt.Sprintf("cosignature/v1\ntime %d\n%s", ts, msg)
	return ed25519.Verify(v.key, []byte(m), sig[8:])
}

func newCosigVerifier(vkey string) (note.Verifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, errors.New("bad vkey")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 33 || raw[0] != 4 {
		return nil, errors.New("bad cosignature vkey")
	}
	h := sha256.Sum256(append([]byte(parts[0]+"\n"), raw...))
	return &cosigVerifier{name: parts[0], hash: binary.BigEndian.Uint32(h[:4]), key: ed25519.PublicKey(raw[1:])}, nil
}

type receipt struct {
	leaf  tlog.Hash
	index int64
	proof tlog.RecordProof
	note  []byte
}

func parseReceipt(line []byte) (*receipt, error) {
	var item struct {
		Entry string `json:"entry"`
		Proof string `json:"proof"`
	}
	if err := json.Unmarshal(line, &item); err != nil {
		return nil, err
	}
	entry, err := base64.StdEncoding.DecodeString(item.Entry)
	if err != nil {
		return nil, err
	}
	head, noteText, ok := strings.Cut(item.Proof, "\n\n")
	if !ok {
		return nil, errors.New("no blank line")
	}
	lines := strings.Split(head, "\n")
	if lines[0] != "c2sp.org/tlog-proof@v1" || !strings.HasPrefix(lines[1], "index ") {
		return nil, errors.New("bad header")
	}
	index, err := strconv.ParseInt(lines[1][6:], 10, 64)
	if err != nil {
		return nil, err
	}
	r := &receipt{leaf: tlog.RecordHash(entry), index: index, note: []byte(noteText)}
	for _, l := range lines[2:] {
		h, err := tlog.ParseHash(l)
		if err != nil {
			return nil, err
		}
		r.proof = append(r.proof, h)
	}
	return r, nil
}

type checkpoint struct {
	size int64
	root tlog.Hash
}

func verifyNote(msg []byte, verifiers note.Verifiers, replicas map[string]bool) (*checkpoint, error) {
	n, err := note.Open(msg, verifiers)
	if err != nil {
		return nil, err
	}
	signers, cosigners := 0, 0
	for _, s := range n.Sigs {
		if replicas[fmt.Sprintf("%s+%08x", s.Name, s.Hash)] {
			signers++
		} else {
			cosigners++
		}
	}
	if signers < 3 || cosigners < 2 {
		return nil, errors.New("quorum not met")
	}
	lines := strings.Split(n.Text, "\n")
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return nil, err
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		return nil, err
	}
	return &checkpoint{size: size, root: root}, nil
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: receipts POLICY STREAM ROUNDS")
		os.Exit(2)
	}
	policy, err := os.ReadFile(os.Args[1])
	check(err)
	var list []note.Verifier
	replicas := map[string]bool{}
	for _, line := range strings.Split(string(policy), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "log":
			v, err := note.NewVerifier(f[1])
			check(err)
			list = append(list, v)
			replicas[fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash())] = true
		case len(f) >= 3 && f[0] == "witness":
			v, err := newCosigVerifier(f[2])
			check(err)
			list = append(list, v)
		}
	}
	verifiers := note.VerifierList(list...)
	stream, err := os.ReadFile(os.Args[2])
	check(err)
	var receipts [][]byte
	sc := bufio.NewScanner(bytes.NewReader(stream))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		receipts = append(receipts, append([]byte(nil), sc.Bytes()...))
	}
	rounds, err := strconv.Atoi(os.Args[3])
	check(err)

	for _, cached := range []bool{false, true} {
		start := time.Now()
		count := 0
		for round := 0; round < rounds; round++ {
			cache := map[string]*checkpoint{}
			for _, line := range receipts {
				r, err := parseReceipt(line)
				check(err)
				cp := cache[string(r.note)]
				if cp == nil {
					cp, err = verifyNote(r.note, verifiers, replicas)
					check(err)
					if cached {
						cache[string(r.note)] = cp
					}
				}
				check(tlog.CheckRecord(r.proof, cp.size, cp.root, r.index, r.leaf))
				count++
			}
		}
		elapsed := time.Since(start)
		mode := "checkpoint verified per receipt"
		if cached {
			mode = "checkpoints cached by bytes"
		}
		fmt.Printf("go sumdb note+tlog, %s: %d receipts in %v = %.0f receipts/s\n",
			mode, count, elapsed, float64(count)/elapsed.Seconds())
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
