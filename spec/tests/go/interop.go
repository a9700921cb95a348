// Interop oracle for bftlog's signed-note tests: reads JSON requests, one
// per line, and answers each with Go's golang.org/x/mod/sumdb/note.
//
//	{"op":"verify","note":"...","vkeys":["..."]} -> {"ok":true,"signers":["name+keyid"]}
//	{"op":"sign","text":"...","skey":"..."}      -> {"ok":true,"note":"..."}
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"golang.org/x/mod/sumdb/note"
)

type request struct {
	Op    string   `json:"op"`
	Note  string   `json:"note"`
	Vkeys []string `json:"vkeys"`
	Text  string   `json:"text"`
	Skey  string   `json:"skey"`
}

type response struct {
	Ok      bool     `json:"ok"`
	Err     string   `json:"err,omitempty"`
	Signers []string `json:"signers,omitempty"`
	Note    string   `json:"note,omitempty"`
}

func handle(req request) response {
	switch req.Op {
	case "verify":
		var verifiers []note.Verifier
		for _, vkey := range req.Vkeys {
			v, err := note.NewVerifier(vkey)
			if err != nil {
				return response{Err: "vkey: " + err.Error()}
			}
			verifiers = append(verifiers, v)
		}
		n, err := note.Open([]byte(req.Note), note.VerifierList(verifiers...))
		if err != nil {
			return response{Err: err.Error()}
		}
		var signers []string
		for _, s := range n.Sigs {
			signers = append(signers, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
		}
		return response{Ok: true, Signers: signers}
	case "sign":
		s, err := note.NewSigner(req.Skey)
		if err != nil {
			return response{Err: "skey: " + err.Error()}
		}
		msg, err := note.Sign(&note.Note{Text: req.Text}, s)
		if err != nil {
			return response{Err: err.Error()}
		}
		return response{Ok: true, Note: string(msg)}
	}
	return response{Err: "unknown op " + req.Op}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 4<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			out.Encode(response{Err: "request: " + err.Error()})
			continue
		}
		out.Encode(handle(req))
	}
}
