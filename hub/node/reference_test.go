package node_test

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub/node"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md from the config structs")

const (
	refFile  = "../../docs/configuration.md"
	refBegin = "<!-- BEGIN GENERATED: go test ./hub/node -run TestConfigReference -update -->"
	refEnd   = "<!-- END GENERATED -->"
	modPath  = "github.com/hubproject/hub/"
)

// TestConfigReference fails when docs/configuration.md and the config
// structs disagree: the key table is generated from node.Config (keys,
// types, defaults, and the fields' doc comments).
func TestConfigReference(t *testing.T) {
	var rows []string
	docs := &fieldDocs{cache: map[string]map[string]string{}}
	walkConfig(reflect.ValueOf(node.DefaultConfig()), "", docs, &rows)
	table := "| key | type | default | description |\n|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n"
	b, err := os.ReadFile(refFile)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, refBegin), strings.Index(doc, refEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the generated-section markers", refFile)
	}
	want := doc[:i+len(refBegin)] + "\n" + table + doc[j:]
	if *update {
		if err := os.WriteFile(refFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if want != doc {
		t.Fatalf("docs/configuration.md is out of date with the config structs; run: go test ./hub/node -run TestConfigReference -update")
	}
}

var (
	durationType = reflect.TypeFor[config.Duration]()
	sizeType     = reflect.TypeFor[config.ByteSize]()
	secretType   = reflect.TypeFor[config.Secret]()
)

func walkConfig(v reflect.Value, path string, docs *fieldDocs, rows *[]string) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		p := name
		if path != "" {
			p = path + "." + name
		}
		fv := v.Field(i)
		ft := f.Type
		desc := docs.get(t, f.Name)
		// Comments name the Go field; the reader knows the YAML key.
		if rest, ok := strings.CutPrefix(desc, f.Name); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, ":")) {
			desc = "`" + name + "`" + rest
		}
		switch {
		case ft == durationType || ft == sizeType || ft == secretType:
		case ft.Kind() == reflect.Struct:
			walkConfig(fv, p, docs, rows)
			continue
		case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
			*rows = append(*rows, fmt.Sprintf("| `%s` | section | off unless set | %s |", p, desc))
			walkConfig(reflect.New(ft.Elem()).Elem(), p, docs, rows)
			continue
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			*rows = append(*rows, fmt.Sprintf("| `%s` | list | %s | %s |", p, defaultOf(fv), desc))
			walkConfig(reflect.New(ft.Elem()).Elem(), p+"[]", docs, rows)
			continue
		}
		*rows = append(*rows, fmt.Sprintf("| `%s` | %s | %s | %s |", p, typeName(ft), defaultOf(fv), desc))
		if ft == secretType {
			*rows = append(*rows, fmt.Sprintf("| `%s_env`, `%s_file` | string | | read `%s` from this environment variable or file |", p, p, name))
		}
	}
}

func typeName(t reflect.Type) string {
	switch t {
	case durationType:
		return "duration"
	case sizeType:
		return "size"
	case secretType:
		return "secret"
	}
	switch t.Kind() {
	case reflect.Slice:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "map of " + typeName(t.Elem())
	case reflect.Float64, reflect.Float32:
		return "number"
	case reflect.Int, reflect.Int32, reflect.Int64:
		return "integer"
	case reflect.Interface:
		return "any"
	}
	return t.Kind().String()
}

func defaultOf(v reflect.Value) string {
	switch {
	case v.Type() == secretType:
		return ""
	case v.Type() == durationType || v.Type() == sizeType:
		if v.Int() == 0 {
			return "0"
		}
		return "`" + fmt.Sprint(v.Interface()) + "`"
	}
	switch v.Kind() {
	case reflect.Slice:
		if v.Len() == 0 {
			return ""
		}
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(v.Index(i).Interface())
		}
		return "`[" + strings.Join(parts, ", ") + "]`"
	case reflect.Map:
		if v.Len() == 0 {
			return ""
		}
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%v: %v", k.Interface(), v.MapIndex(k).Interface())
		}
		return "`{" + strings.Join(parts, ", ") + "}`"
	case reflect.String:
		if v.String() == "" {
			return ""
		}
		return "`" + v.String() + "`"
	case reflect.Interface, reflect.Pointer:
		return ""
	}
	return "`" + fmt.Sprint(v.Interface()) + "`"
}

// fieldDocs reads struct field comments from the Go source of the type's
// package, so the reference says what the code says.
type fieldDocs struct {
	cache map[string]map[string]string // "pkgpath.Type" -> field -> doc
}

func (d *fieldDocs) get(t reflect.Type, field string) string {
	key := t.PkgPath() + "." + t.Name()
	m, ok := d.cache[key]
	if !ok {
		m = parseFieldDocs(t.PkgPath(), t.Name())
		d.cache[key] = m
	}
	return m[field]
}

func parseFieldDocs(pkgPath, typeName string) map[string]string {
	out := map[string]string{}
	rel, ok := strings.CutPrefix(pkgPath, modPath)
	if !ok {
		return out
	}
	dir := filepath.Join("..", "..", rel)
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, parser.ParseComments)
	if err != nil {
		return out
	}
	for _, p := range pkgs {
		for _, f := range p.Files {
			ast.Inspect(f, func(n ast.Node) bool {
				ts, ok := n.(*ast.TypeSpec)
				if !ok || ts.Name.Name != typeName {
					return true
				}
				st, ok := ts.Type.(*ast.StructType)
				if !ok {
					return false
				}
				for _, fl := range st.Fields.List {
					text := ""
					if fl.Doc != nil {
						text = fl.Doc.Text()
					} else if fl.Comment != nil {
						text = fl.Comment.Text()
					}
					text = strings.Join(strings.Fields(text), " ")
					text = strings.ReplaceAll(text, "|", "\\|")
					for _, nm := range fl.Names {
						out[nm.Name] = text
					}
				}
				return false
			})
		}
	}
	return out
}
