// Command keyring answers, for a list of images, which credentials the kubelet would hand
// to the container runtime given a pod's imagePullSecrets. It runs the kubelet's own code
// (k8s.io/kubernetes pkg/credentialprovider/secrets and pkg/util/parsers) the way the
// kubelet's image manager does (pkg/kubelet/images/image_manager.go,
// makeLookupPullCredentialsFunc):
//
//	repo, _, _, err := parsers.ParseImageName(image)
//	keyring, err := secrets.MakeDockerKeyring(pullSecrets, credentialprovider.UnionDockerKeyring{...})
//	creds, _ := keyring.Lookup(repo)
//
// with an empty node keyring (no node-wide config.json, no credential provider plugins), so
// every credential it reports comes from the secrets.
//
// Test tool of regcred-refresher (tests/integration/pull_proof.rs): its output holds the
// passwords, so the test can compare them with what the providers produced. Never use it
// anywhere else.
//
// Usage:
//
//	keyring [-namespace NS -secret NAME]... [-secret-file FILE]... IMAGE...
//
// -secret reads the named Secret of -namespace from the API server with the kubeconfig in
// KUBECONFIG (as kubectl would: the kubelet reads pull secrets from the API server too);
// -secret-file reads one Secret object as JSON (`kubectl get secret -o json`). The order of
// the secrets is the order of the pod's imagePullSecrets.
//
// Output (stdout), one JSON array with an object per image, in order:
//
//	{"image": "nginx", "repo": "docker.io/library/nginx", "found": true,
//	 "credentials": [{"username": "...", "password": "...", "email": "...", "secret": "ns/name"}],
//	 "keys": [{"secret": "ns/name", "key": "https://index.docker.io/v1/"}]}
//
// "credentials" is the kubelet's answer, in its order (the runtime tries them in turn);
// "keys" names the `auths` entries those credentials came from (an entry is listed when the
// keyring built from that entry alone serves the image with one of the credentials above).
// An image the parser refuses gets "error" instead. Exit status 0 unless a secret could not
// be read or parsed.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/kubernetes/pkg/credentialprovider"
	credentialprovidersecrets "k8s.io/kubernetes/pkg/credentialprovider/secrets"
	"k8s.io/kubernetes/pkg/util/parsers"
)

type credential struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Email    string `json:"email,omitempty"`
	Secret   string `json:"secret,omitempty"`
}

type matchedKey struct {
	Secret string `json:"secret"`
	Key    string `json:"key"`
}

type result struct {
	Image       string       `json:"image"`
	Repo        string       `json:"repo,omitempty"`
	Found       bool         `json:"found"`
	Credentials []credential `json:"credentials"`
	Keys        []matchedKey `json:"keys"`
	Error       string       `json:"error,omitempty"`
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "keyring: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	var names, files multi
	namespace := flag.String("namespace", "", "namespace of the -secret names")
	flag.Var(&names, "secret", "name of a Secret in -namespace, read from the API server (repeatable)")
	flag.Var(&files, "secret-file", "a Secret object as JSON (repeatable)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: keyring [-namespace NS -secret NAME]... [-secret-file FILE]... IMAGE...")
		flag.PrintDefaults()
	}
	flag.Parse()
	images := flag.Args()
	if len(images) == 0 {
		flag.Usage()
		os.Exit(2)
	}

	var pullSecrets []v1.Secret
	if len(names) > 0 {
		if *namespace == "" {
			die("-secret needs -namespace")
		}
		pullSecrets = append(pullSecrets, fromAPIServer(*namespace, names)...)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			die("%v", err)
		}
		var s v1.Secret
		if err := json.Unmarshal(b, &s); err != nil {
			die("%s: not a Secret object: %v", f, err)
		}
		pullSecrets = append(pullSecrets, s)
	}

	// The kubelet's keyring over all the pod's pull secrets, with no node keyring.
	keyring, err := credentialprovidersecrets.MakeDockerKeyring(pullSecrets, credentialprovider.UnionDockerKeyring{})
	if err != nil {
		die("MakeDockerKeyring: %v", err)
	}
	entries := singleEntrySecrets(pullSecrets)

	out := make([]result, 0, len(images))
	for _, image := range images {
		r := result{Image: image, Credentials: []credential{}, Keys: []matchedKey{}}
		repo, _, _, err := parsers.ParseImageName(image)
		if err != nil {
			r.Error = err.Error()
			out = append(out, r)
			continue
		}
		r.Repo = repo
		creds, found := keyring.Lookup(repo)
		r.Found = found
		for _, c := range creds {
			cred := credential{Username: c.Username, Password: c.Password, Email: c.Email}
			if c.Source != nil && c.Source.Secret != nil {
				cred.Secret = c.Source.Secret.Namespace + "/" + c.Source.Secret.Name
			}
			r.Credentials = append(r.Credentials, cred)
		}
		for _, e := range entries {
			one, err := credentialprovidersecrets.MakeDockerKeyring([]v1.Secret{e.secret}, credentialprovider.UnionDockerKeyring{})
			if err != nil {
				die("MakeDockerKeyring (one entry): %v", err)
			}
			alone, ok := one.Lookup(repo)
			if !ok {
				continue
			}
			for _, a := range alone {
				if contains(r.Credentials, a.Username, a.Password) {
					r.Keys = append(r.Keys, matchedKey{Secret: e.from, Key: e.key})
					break
				}
			}
		}
		out = append(out, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		die("%v", err)
	}
}

func contains(creds []credential, user, pass string) bool {
	for _, c := range creds {
		if c.Username == user && c.Password == pass {
			return true
		}
	}
	return false
}

func fromAPIServer(namespace string, names []string) []v1.Secret {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		die("kubeconfig: %v", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		die("client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []v1.Secret
	for _, n := range names {
		s, err := cs.CoreV1().Secrets(namespace).Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			die("secret %s/%s: %v", namespace, n, err)
		}
		out = append(out, *s)
	}
	return out
}

type entry struct {
	from   string
	key    string
	secret v1.Secret
}

// singleEntrySecrets splits every dockerconfigjson secret into one secret per `auths` key,
// so each key can be tried on its own with the same keyring code.
func singleEntrySecrets(secrets []v1.Secret) []entry {
	var out []entry
	for _, s := range secrets {
		if s.Type != v1.SecretTypeDockerConfigJson {
			continue
		}
		var doc struct {
			Auths map[string]json.RawMessage `json:"auths"`
		}
		if err := json.Unmarshal(s.Data[v1.DockerConfigJsonKey], &doc); err != nil {
			die("secret %s/%s: %v", s.Namespace, s.Name, err)
		}
		for k, raw := range doc.Auths {
			one, err := json.Marshal(map[string]map[string]json.RawMessage{"auths": {k: raw}})
			if err != nil {
				die("%v", err)
			}
			c := *s.DeepCopy()
			c.Data = map[string][]byte{v1.DockerConfigJsonKey: one}
			out = append(out, entry{from: s.Namespace + "/" + s.Name, key: k, secret: c})
		}
	}
	return out
}
