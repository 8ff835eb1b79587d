package clustertest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/conf"
)

// TestDeployFiles checks what deploy/ ships without running it: every NATS
// config passes nats-server's own config test; the YAML parses; every flag
// and environment variable that the runner, the Dockerfile, the compose
// file and the Kubernetes manifests give a binary is one that binary
// documents in -h; every path they name exists; and the Helm values state
// the same accounts and permissions as deploy/nats/accounts.conf.
func TestDeployFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and the binaries")
	}
	bin := binaries(t)
	help := map[string]*usage{}
	for _, b := range []string{"edge", "registry", "signal", "nats-server"} {
		help[b] = binaryUsage(t, filepath.Join(bin, b))
	}

	t.Run("nats configs", func(t *testing.T) {
		confs, _ := filepath.Glob(deployPath(t, "nats", "*.conf"))
		if len(confs) < 5 {
			t.Fatalf("deploy/nats has %d configs", len(confs))
		}
		for _, c := range confs {
			out, err := exec.Command(filepath.Join(bin, "nats-server"), "-c", c, "-t").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "is valid") {
				t.Errorf("nats-server -c %s -t: %v\n%s", c, err, out)
			}
		}
	})

	t.Run("runner", func(t *testing.T) {
		script := deployPath(t, "cluster.sh")
		if out, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
			t.Fatalf("bash -n: %v\n%s", err, out)
		}
		for _, inv := range scriptInvocations(t, script) {
			help[inv.bin].check(t, "cluster.sh", inv.args, inv.env)
		}
		b, _ := os.ReadFile(script)
		for _, n := range []string{"n1", "n2", "n3"} {
			if !strings.Contains(string(b), "deploy/nats/n$n.conf") {
				t.Fatal("cluster.sh does not start the nodes from deploy/nats/n$n.conf")
			}
			mustExist(t, "cluster.sh", deployPath(t, "nats", n+".conf"))
		}
	})

	// deploy/regions: the production configs as they are; the local ones
	// (regions.sh, TestRegions) with their environment set as the runner
	// sets it.
	t.Run("region configs", func(t *testing.T) {
		confs, _ := filepath.Glob(deployPath(t, "regions", "*.conf"))
		if len(confs) != 6 {
			t.Fatalf("deploy/regions has %d configs, want 6 (east, west, site and their local-*)", len(confs))
		}
		for _, c := range confs {
			cmd := exec.Command(filepath.Join(bin, "nats-server"), "-c", c, "-t")
			cmd.Env = append(os.Environ(), "GATEWAY_LISTEN=127.0.0.1:7222", "GATEWAY_ADVERTISE=127.0.0.1:17222",
				"GATEWAY_PEERS=[nats://gateway:dev-gateway-pw@127.0.0.1:17322, nats://gateway:dev-gateway-pw@127.0.0.1:17323]",
				"LEAF_LISTEN=127.0.0.1:7422", "LEAF_HUB=[nats-leaf://leaf:dev-leaf-pw@127.0.0.1:7422]")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "is valid") {
				t.Errorf("nats-server -c %s -t: %v\n%s", c, err, out)
			}
			b, _ := os.ReadFile(c)
			if !strings.Contains(string(b), "include ../nats/accounts.conf") {
				t.Errorf("%s does not include ../nats/accounts.conf: every cluster of a super-cluster needs the same accounts", c)
			}
			if js := strings.Contains(string(b), "\njetstream {"); js != strings.Contains(filepath.Base(c), "east") {
				t.Errorf("%s: jetstream block %v; JetStream runs in the home region, east, only", c, js)
			}
		}
	})

	t.Run("regions runner", func(t *testing.T) {
		script := deployPath(t, "regions.sh")
		if out, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
			t.Fatalf("bash -n: %v\n%s", err, out)
		}
		for _, inv := range scriptInvocations(t, script) {
			help[inv.bin].check(t, "regions.sh", inv.args, inv.env)
		}
		b, _ := os.ReadFile(script)
		for _, want := range []string{"deploy/regions/local-$region.conf", "deploy/regions/local-site.conf", "./deploy/regions/linkdelay/cmd/linkdelay", "-kv-cluster east"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("regions.sh does not name %s", want)
			}
		}
		for _, c := range []string{"local-east.conf", "local-west.conf", "local-site.conf"} {
			mustExist(t, "regions.sh", deployPath(t, "regions", c))
		}
	})

	t.Run("Dockerfile", func(t *testing.T) {
		stages := dockerfile(t, deployPath(t, "Dockerfile"))
		for _, st := range stages {
			for _, src := range st.copies {
				mustExist(t, "Dockerfile COPY", filepath.Join(repoRoot(t), src))
			}
			if len(st.cmd) == 0 {
				continue
			}
			args := append(append([]string{}, st.entrypoint...), st.cmd...)
			help[filepath.Base(args[0])].check(t, "Dockerfile stage "+st.name, args[1:], nil)
			for _, a := range args {
				containerPath(t, "Dockerfile", a)
			}
		}
		// The build image is the Go of go.mod.
		goMod, _ := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
		m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
		if m == nil || stages[0].from != "golang:"+string(m[1]) {
			t.Errorf("Dockerfile builds with %s; go.mod says go %s", stages[0].from, m[1])
		}
	})

	var docs map[string][]any
	t.Run("YAML", func(t *testing.T) {
		files, _ := filepath.Glob(deployPath(t, "k8s", "*.yaml"))
		files = append(files, deployPath(t, "docker-compose.yml"))
		var err error
		docs, err = parseYAML(files)
		if err == errNoYAML {
			t.Skip(err)
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	if len(docs) == 0 {
		return // no YAML parser here; the rest needs one
	}

	t.Run("compose", func(t *testing.T) {
		compose := docs["docker-compose.yml"][0].(map[string]any)
		services := compose["services"].(map[string]any)
		roles := map[string]int{}
		pw := loadCreds(t).Passwords
		for name, s := range services {
			svc := s.(map[string]any)
			build := svc["build"].(map[string]any)
			mustExist(t, name+" build context", deployPath(t, build["context"].(string)))
			mustExist(t, name+" dockerfile", filepath.Join(deployPath(t, build["context"].(string)), build["dockerfile"].(string)))
			for _, v := range list(svc["volumes"]) {
				if src, _, ok := strings.Cut(v, ":"); ok && strings.HasPrefix(src, ".") {
					mustExist(t, name+" volume", deployPath(t, src))
				}
			}
			cmd := list(svc["command"])
			env := map[string]string{}
			for k, v := range asMap(svc["environment"]) {
				env[k] = fmt.Sprint(v)
			}
			b := "nats-server"
			if build["target"] != "nats" {
				b = filepath.Base(cmd[0])
				cmd = cmd[1:]
			}
			roles[b]++
			help[b].check(t, "compose "+name, cmd, env)
			for _, a := range cmd {
				containerPath(t, "compose "+name, a)
			}
			if u := env["NATS_USER"]; u != "" && env["NATS_PASSWORD"] != pw[u] {
				t.Errorf("compose %s: NATS_PASSWORD of %s differs from accounts.conf", name, u)
			}
			if u := env["NATS_USER"]; u != "" && u != b {
				t.Errorf("compose %s: runs %s with the credentials of %s", name, b, u)
			}
		}
		if roles["nats-server"] != 3 || roles["registry"] != 2 || roles["edge"] != 3 {
			t.Errorf("compose runs %v; want 3 nats-server, 2 registry, 3 edge", roles)
		}
	})

	t.Run("kubernetes", func(t *testing.T) {
		kust := docs["kustomization.yaml"][0].(map[string]any)
		for _, r := range list(kust["resources"]) {
			mustExist(t, "kustomization", deployPath(t, "k8s", r))
		}
		secrets := map[string]map[string]any{}
		kinds := map[string]int{}
		var deployments []map[string]any
		for file, ds := range docs {
			if file == "nats-values.yaml" || file == "kustomization.yaml" || file == "docker-compose.yml" {
				continue
			}
			for _, d := range ds {
				obj := d.(map[string]any)
				kinds[obj["kind"].(string)]++
				name := obj["metadata"].(map[string]any)["name"].(string)
				switch obj["kind"] {
				case "Secret":
					secrets[name] = asMap(obj["stringData"])
				case "Deployment":
					deployments = append(deployments, obj)
				}
			}
		}
		for _, k := range []string{"Deployment", "Service", "PodDisruptionBudget", "Secret"} {
			if kinds[k] == 0 {
				t.Errorf("no %s in deploy/k8s", k)
			}
		}
		secretRef := func(where string, ref any) {
			r := asMap(ref)
			s, ok := secrets[fmt.Sprint(r["name"])]
			if !ok || s[fmt.Sprint(r["key"])] == nil {
				t.Errorf("%s: secret %v key %v not in secrets.yaml", where, r["name"], r["key"])
			}
		}
		for _, d := range deployments {
			name := d["metadata"].(map[string]any)["name"].(string)
			pod := d["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			for _, c := range pod["containers"].([]any) {
				c := c.(map[string]any)
				cmd := list(c["command"])
				b := filepath.Base(cmd[0])
				env := map[string]string{}
				fromSecret := map[string]bool{}
				for _, e := range c["env"].([]any) {
					e := e.(map[string]any)
					env[e["name"].(string)] = fmt.Sprint(e["value"])
					if vf := asMap(e["valueFrom"]); vf["secretKeyRef"] != nil {
						secretRef(name, vf["secretKeyRef"])
						fromSecret[e["name"].(string)] = true
					}
				}
				help[b].check(t, "k8s "+name, append(cmd[1:], list(c["args"])...), env)
				if !fromSecret["NATS_USER"] || !fromSecret["NATS_PASSWORD"] {
					t.Errorf("k8s %s: NATS_USER and NATS_PASSWORD must come from a Secret", name)
				}
				ports := map[string]bool{}
				for _, p := range c["ports"].([]any) {
					ports[p.(map[string]any)["name"].(string)] = true
				}
				for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
					get := asMap(asMap(c[probe])["httpGet"])
					if get["path"] != path || !ports[fmt.Sprint(get["port"])] {
						t.Errorf("k8s %s: %s is %v, want %s on a declared port", name, probe, get, path)
					}
				}
			}
		}

		// The Helm values: same accounts and permissions as accounts.conf,
		// passwords from the Secrets, the nats-server of go.mod.
		values := docs["nats-values.yaml"][0].(map[string]any)
		cfg := asMap(values["config"])
		if asMap(cfg["cluster"])["replicas"] != float64(3) || asMap(cfg["jetstream"])["enabled"] != true {
			t.Errorf("nats-values: cluster %v, jetstream %v; want 3 replicas and JetStream", cfg["cluster"], cfg["jetstream"])
		}
		merge := asMap(cfg["merge"])
		want, err := conf.ParseFile(deployPath(t, "nats", "accounts.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if merge["system_account"] != want["system_account"] {
			t.Errorf("nats-values: system_account %v, accounts.conf %v", merge["system_account"], want["system_account"])
		}
		gotAcc, wantAcc := asMap(merge["accounts"]), asMap(want["accounts"])
		if !reflect.DeepEqual(sortedKeys(gotAcc), sortedKeys(wantAcc)) {
			t.Errorf("nats-values accounts %v, accounts.conf %v", sortedKeys(gotAcc), sortedKeys(wantAcc))
		}
		env := asMap(asMap(values["container"])["env"])
		for acc := range wantAcc {
			for _, k := range []string{"imports", "exports"} {
				if g, w := normalize(asMap(gotAcc[acc])[k]), normalize(asMap(wantAcc[acc])[k]); !reflect.DeepEqual(g, w) {
					t.Errorf("account %s: %s differ:\nnats-values:   %v\naccounts.conf: %v", acc, k, g, w)
				}
			}
			gotUsers, wantUsers := usersOf(gotAcc[acc]), usersOf(wantAcc[acc])
			if !reflect.DeepEqual(sortedKeys(gotUsers), sortedKeys(wantUsers)) {
				t.Errorf("account %s: nats-values users %v, accounts.conf %v", acc, sortedKeys(gotUsers), sortedKeys(wantUsers))
			}
			for u, w := range wantUsers {
				g := asMap(gotUsers[u])
				if !reflect.DeepEqual(normalize(g["permissions"]), normalize(asMap(w)["permissions"])) {
					t.Errorf("user %s: permissions differ:\nnats-values:  %v\naccounts.conf: %v", u, normalize(g["permissions"]), normalize(asMap(w)["permissions"]))
				}
				m := regexp.MustCompile(`^<< \$([A-Z_]+) >>$`).FindStringSubmatch(fmt.Sprint(g["password"]))
				if m == nil {
					t.Errorf("user %s: password %q is not a << $VARIABLE >>", u, g["password"])
					continue
				}
				vf := asMap(asMap(env[m[1]])["valueFrom"])
				if vf["secretKeyRef"] == nil {
					t.Errorf("user %s: $%s is not set from a Secret", u, m[1])
					continue
				}
				secretRef("nats-values "+u, vf["secretKeyRef"])
				if s := secrets[fmt.Sprint(asMap(vf["secretKeyRef"])["name"])]; s != nil && s["user"] != u {
					t.Errorf("user %s: password from the Secret of %v", u, s["user"])
				}
			}
		}
		goMod, _ := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
		v := regexp.MustCompile(`github.com/nats-io/nats-server/v2 v(\S+)`).FindSubmatch(goMod)
		tag := asMap(asMap(values["container"])["image"])["tag"]
		if v == nil || tag != string(v[1])+"-alpine" {
			t.Errorf("nats-values image tag %v; go.mod has nats-server %s", tag, v[1])
		}
	})

	t.Run("kustomize", func(t *testing.T) {
		if _, err := exec.LookPath("kubectl"); err != nil {
			t.Skip("no kubectl")
		}
		if out, err := exec.Command("kubectl", "kustomize", deployPath(t, "k8s")).CombinedOutput(); err != nil {
			t.Fatalf("kubectl kustomize: %v\n%s", err, out)
		}
	})
}

// usage is what a binary's -h says: its flags and environment variables.
type usage struct {
	bin   string
	flags map[string]bool
	env   map[string]bool
}

func binaryUsage(t *testing.T, bin string) *usage {
	t.Helper()
	out, _ := exec.Command(bin, "-h").CombinedOutput() // -h exits 0 or 2
	u := &usage{bin: filepath.Base(bin), flags: map[string]bool{}, env: map[string]bool{}}
	for _, m := range regexp.MustCompile(`(?m)(?:^|[\s,])(--?[a-zA-Z][a-zA-Z0-9_-]*)`).FindAllStringSubmatch(string(out), -1) {
		u.flags[strings.TrimLeft(m[1], "-")] = true
	}
	for _, m := range regexp.MustCompile(`\(env ([A-Z0-9_]+)\)`).FindAllStringSubmatch(string(out), -1) {
		u.env[m[1]] = true
	}
	if len(u.flags) < 3 {
		t.Fatalf("%s -h: no flags found:\n%s", bin, out)
	}
	return u
}

// check reports every -flag in args and every variable in env that u does
// not document.
func (u *usage) check(t *testing.T, where string, args []string, env map[string]string) {
	t.Helper()
	if u == nil {
		t.Errorf("%s: runs a binary this test does not know", where)
		return
	}
	n := 0
	for _, a := range args {
		if !strings.HasPrefix(a, "-") || a == "-" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		n++
		if !u.flags[name] {
			t.Errorf("%s: %s has no flag %s", where, u.bin, a)
		}
	}
	for k := range env {
		if u.bin != "nats-server" && !u.env[k] {
			t.Errorf("%s: %s does not read the environment variable %s", where, u.bin, k)
		}
	}
	if n == 0 && len(env) == 0 {
		t.Logf("%s: runs %s without flags", where, u.bin)
	}
}

func mustExist(t *testing.T, where, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("%s: %v", where, err)
	}
}

// containerPath checks that a path inside the images (/etc/nats/...) is one
// of deploy/nats's files.
func containerPath(t *testing.T, where, arg string) {
	t.Helper()
	if rest, ok := strings.CutPrefix(arg, "/etc/nats/"); ok {
		mustExist(t, where, deployPath(t, "nats", rest))
	}
}

// invocation is one start of a binary in a runner (cluster.sh, regions.sh).
type invocation struct {
	bin  string
	args []string
	env  map[string]string
}

// scriptInvocations finds the lines of a runner that run "$BIN/<binary>"
// (with their continuation lines) and their flags and VAR=value prefixes.
func scriptInvocations(t *testing.T, script string) []invocation {
	t.Helper()
	f, err := os.Open(script)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	binRE := regexp.MustCompile(`"\$BIN/([a-z-]+)"`)
	envRE := regexp.MustCompile(`\b([A-Z][A-Z0-9_]*)=\S+`)
	var invs []invocation
	var cur *invocation
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if m := binRE.FindStringSubmatchIndex(line); cur == nil && m != nil {
			if strings.HasPrefix(line, "go build") {
				continue
			}
			cur = &invocation{bin: line[m[2]:m[3]], env: map[string]string{}}
			for _, e := range envRE.FindAllStringSubmatch(line[:m[0]], -1) {
				if e[1] != "START_DIR" && e[1] != "START_ENV" {
					cur.env[e[1]] = ""
				}
			}
			line = line[m[1]:]
		}
		if cur == nil {
			continue
		}
		for _, w := range strings.Fields(line) {
			w = strings.Trim(w, `"`)
			if strings.HasPrefix(w, "-") && w != "-" {
				cur.args = append(cur.args, w)
			}
		}
		if !strings.HasSuffix(line, `\`) {
			invs = append(invs, *cur)
			cur = nil
		}
	}
	seen := map[string]bool{}
	for _, inv := range invs {
		seen[inv.bin] = true
	}
	if !seen["nats-server"] || !seen["edge"] || !seen["registry"] {
		t.Fatalf("%s: found invocations of %v; want nats-server, edge and registry", filepath.Base(script), seen)
	}
	return invs
}

// stage is one stage of a Dockerfile.
type stage struct {
	name, from      string
	entrypoint, cmd []string
	copies          []string // COPY sources from the build context
}

func dockerfile(t *testing.T, path string) []stage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	var stages []stage
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			st := stage{from: f[1]}
			if len(f) == 4 && strings.EqualFold(f[2], "AS") {
				st.name = f[3]
			}
			stages = append(stages, st)
		case "CMD", "ENTRYPOINT":
			var v []string
			if err := json.Unmarshal([]byte(strings.TrimSpace(line[len(f[0]):])), &v); err != nil {
				t.Fatalf("Dockerfile: %s is not in exec (JSON) form: %v", line, err)
			}
			st := &stages[len(stages)-1]
			if strings.ToUpper(f[0]) == "CMD" {
				st.cmd = v
			} else {
				st.entrypoint = v
			}
		case "COPY":
			st := &stages[len(stages)-1]
			var srcs []string
			from := false
			for _, w := range f[1 : len(f)-1] {
				if strings.HasPrefix(w, "--from=") {
					from = true
				}
				if !strings.HasPrefix(w, "--") {
					srcs = append(srcs, w)
				}
			}
			if !from {
				for _, s := range srcs {
					if s != "." {
						st.copies = append(st.copies, s)
					}
				}
			}
		}
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages", len(stages))
	}
	return stages
}

var errNoYAML = fmt.Errorf("no YAML parser: python3 with PyYAML is not installed")

// parseYAML parses every document of the YAML files with python3's PyYAML
// (the module graph has no YAML package for Go) and returns them as JSON
// values, by file base name.
func parseYAML(paths []string) (map[string][]any, error) {
	py, err := exec.LookPath("python3")
	if err != nil {
		return nil, errNoYAML
	}
	if exec.Command(py, "-c", "import yaml").Run() != nil {
		return nil, errNoYAML
	}
	const prog = `
import json, os, sys, yaml
out = {}
for p in sys.argv[1:]:
    try:
        with open(p) as f:
            out[os.path.basename(p)] = [d for d in yaml.safe_load_all(f) if d is not None]
    except Exception as e:
        sys.exit("%s: %s" % (p, e))
print(json.dumps(out))
`
	out, err := exec.Command(py, append([]string{"-c", prog}, paths...)...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, fmt.Errorf("%v\n%s", err, ee.Stderr)
		}
		return nil, err
	}
	var docs map[string][]any
	if err := json.Unmarshal(out, &docs); err != nil {
		return nil, err
	}
	for f, d := range docs {
		if len(d) == 0 {
			return nil, fmt.Errorf("%s: no YAML documents", f)
		}
	}
	return docs, nil
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// list returns a YAML list of strings.
func list(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, e := range l {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	sort.Strings(k)
	return k
}

// usersOf maps an account's users by name.
func usersOf(acc any) map[string]any {
	out := map[string]any{}
	for _, u := range asMap(acc)["users"].([]any) {
		out[fmt.Sprint(asMap(u)["user"])] = u
	}
	return out
}

// normalize makes a permissions value from either parser comparable: JSON
// round trip, so []string and []any, int and float64 agree.
func normalize(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}
