// pgxcheck runs SQL through Go's pgx (the driver inside Grafana's PostgreSQL data source) against
// the sensorstream endpoint, in both the simple and the extended protocol, and prints what came
// back as JSON. Grafana's macros and variables are expanded here the way Grafana's PostgreSQL
// data source expands them, so the SQL that reaches the server is the SQL Grafana would send.
//
// Input (stdin): {"conn": "...", "from": RFC 3339, "to": RFC 3339, "interval": "1m",
//
//	"vars": {"sensor": ["a", "b"]}, "queries": [{"name": "...", "sql": "..."}],
//	"range_query": "SQL with $1 = from and $2 = to", "pool_query": "SQL for pgxpool's check"}
//
// Output (stdout): one JSON list with an entry per query and protocol mode.
package main

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

type query struct {
	Name string `json:"name"`
	SQL  string `json:"sql"`
}

type input struct {
	Conn       string              `json:"conn"`
	From       time.Time           `json:"from"`
	To         time.Time           `json:"to"`
	Interval   string              `json:"interval"`
	Vars       map[string][]string `json:"vars"`
	Queries    []query             `json:"queries"`
	RangeQuery string              `json:"range_query"`
	PoolQuery  string              `json:"pool_query"`
}

type column struct {
	Name string `json:"name"`
	OID  uint32 `json:"oid"`
}

type outcome struct {
	Name    string     `json:"name"`
	Mode    string     `json:"mode"`
	SQL     string     `json:"sql"`
	Columns []column   `json:"columns"`
	Rows    int        `json:"rows"`
	Values  [][]string `json:"values"` // the first 100 rows, each value printed by show()
	GoTypes []string   `json:"go_types"`
	Error   string     `json:"error,omitempty"`
}

var macro = regexp.MustCompile(`\$([_a-zA-Z0-9]+)\(([^\)]*)\)`)

// expandMacros mirrors Grafana's PostgreSQL macro engine for the macros our dashboard uses.
func expandMacros(sql string, in input) (string, error) {
	var failure error
	out := macro.ReplaceAllStringFunc(sql, func(call string) string {
		parts := macro.FindStringSubmatch(call)
		args := strings.Split(parts[2], ",")
		for i := range args {
			args[i] = strings.TrimSpace(args[i])
		}
		switch parts[1] {
		case "__timeFilter":
			return fmt.Sprintf("%s BETWEEN '%s' AND '%s'", args[0],
				in.From.UTC().Format(time.RFC3339Nano), in.To.UTC().Format(time.RFC3339Nano))
		case "__timeFrom":
			return fmt.Sprintf("'%s'", in.From.UTC().Format(time.RFC3339Nano))
		case "__timeTo":
			return fmt.Sprintf("'%s'", in.To.UTC().Format(time.RFC3339Nano))
		case "__timeGroup", "__timeGroupAlias":
			if len(args) < 2 {
				failure = fmt.Errorf("%s needs a column and an interval", parts[1])
				return call
			}
			interval, err := time.ParseDuration(strings.Trim(args[1], "'"))
			if err != nil {
				failure = err
				return call
			}
			group := fmt.Sprintf("floor(extract(epoch from %s)/%v)*%v", args[0], interval.Seconds(), interval.Seconds())
			if parts[1] == "__timeGroupAlias" {
				group += ` AS "time"`
			}
			return group
		}
		failure = fmt.Errorf("unknown macro %s", parts[1])
		return call
	})
	return out, failure
}

// expandVariables does what Grafana's front end does before the query reaches the data source:
// $__interval becomes the interval, and a multi-value variable becomes 'a','b' (quotes doubled).
func expandVariables(sql string, in input) string {
	sql = strings.ReplaceAll(sql, "$__interval", in.Interval)
	for name, values := range in.Vars {
		quoted := make([]string, len(values))
		for i, v := range values {
			quoted[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
		}
		joined := strings.Join(quoted, ",")
		sql = strings.ReplaceAll(sql, "${"+name+"}", joined)
		sql = regexp.MustCompile(`\$`+name+`\b`).ReplaceAllLiteralString(sql, joined)
	}
	return sql
}

// show prints a value; pgx's own types (numeric, intervals) as their SQL text.
func show(v any) string {
	if valuer, ok := v.(driver.Valuer); ok {
		if plain, err := valuer.Value(); err == nil {
			return fmt.Sprintf("%v", plain)
		}
	}
	return fmt.Sprintf("%v", v)
}

func run(ctx context.Context, conn *pgx.Conn, name, mode, sql string, args ...any) outcome {
	res := outcome{Name: name, Mode: mode, SQL: sql}
	if mode == "simple" {
		args = append([]any{pgx.QueryExecModeSimpleProtocol}, args...)
	}
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer rows.Close()
	for _, fd := range rows.FieldDescriptions() {
		res.Columns = append(res.Columns, column{fd.Name, fd.DataTypeOID})
	}
	for rows.Next() {
		values, err := rows.Values()
		if err != nil {
			res.Error = err.Error()
			return res
		}
		if res.Rows < 100 {
			printed := make([]string, len(values))
			for i, v := range values {
				printed[i] = show(v)
				if res.Rows == 0 {
					res.GoTypes = append(res.GoTypes, fmt.Sprintf("%T", v))
				}
			}
			res.Values = append(res.Values, printed)
		}
		res.Rows++
	}
	if err := rows.Err(); err != nil {
		res.Error = err.Error()
	}
	return res
}

// poolCheck does with one connection what Grafana's pgx pool does: Ping it (pgx sends "-- ping"),
// query, leave it idle past a second so that the next acquire pings it again (pgxpool's default
// ShouldPing), query again. A failed ping on acquire makes pgxpool drop the connection and open a
// new one, so the check also reports how many connections the pool opened: 1 when every ping worked.
func poolCheck(ctx context.Context, in input) outcome {
	res := outcome{Name: "pool", Mode: "pgxpool", SQL: in.PoolQuery}
	config, err := pgxpool.ParseConfig(in.Conn)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	config.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, config)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer pool.Close()
	for round := 0; round < 2; round++ {
		if err := pool.Ping(ctx); err != nil {
			res.Error = "ping: " + err.Error()
			return res
		}
		var value any
		if err := pool.QueryRow(ctx, in.PoolQuery).Scan(&value); err != nil {
			res.Error = err.Error()
			return res
		}
		res.Values = append(res.Values, []string{show(value)})
		res.Rows++
		time.Sleep(1100 * time.Millisecond)
	}
	res.Values = append(res.Values, []string{fmt.Sprintf("%d", pool.Stat().NewConnsCount())})
	return res
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "bad input:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, in.Conn)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer conn.Close(ctx)
	var results []outcome
	ping := outcome{Name: "ping", Mode: "conn"}
	if err := conn.Ping(ctx); err != nil {
		ping.Error = err.Error()
	}
	results = append(results, ping)
	if in.PoolQuery != "" {
		results = append(results, poolCheck(ctx, in))
	}
	for _, q := range in.Queries {
		sql, err := expandMacros(expandVariables(q.SQL, in), in)
		if err != nil {
			results = append(results, outcome{Name: q.Name, Error: err.Error()})
			continue
		}
		for _, mode := range []string{"simple", "extended"} {
			results = append(results, run(ctx, conn, q.Name, mode, sql))
		}
	}
	if in.RangeQuery != "" {
		results = append(results, run(ctx, conn, "range", "extended", in.RangeQuery, in.From, in.To))
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		os.Exit(1)
	}
}
