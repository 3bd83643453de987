// JdbcCheck: the PostgreSQL JDBC driver (as Tableau, Metabase and DBeaver use it) against the
// sensorstream endpoint. Run as a single-file program: java -cp <driver jars> JdbcCheck.java URL USER PASSWORD FROM TO
// Prints one line per fact ("key<TAB>value"); the Python test reads and checks them.
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.Timestamp;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.List;

public class JdbcCheck {
    static int count(ResultSet rs) throws Exception {
        int n = 0;
        while (rs.next()) {
            n++;
        }
        return n;
    }

    public static void main(String[] args) throws Exception {
        try (Connection conn = DriverManager.getConnection(args[0], args[1], args[2])) {
            DatabaseMetaData meta = conn.getMetaData();
            System.out.println("product\t" + meta.getDatabaseProductName() + " " + meta.getDatabaseProductVersion());
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = meta.getTables(null, null, "%", new String[] {"TABLE"})) {
                while (rs.next()) {
                    tables.add(rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME"));
                }
            }
            System.out.println("tables\t" + String.join(",", tables));
            try (ResultSet rs = meta.getColumns(null, null, "window_stats", "%")) {
                while (rs.next()) {
                    System.out.println("column\t" + rs.getString("COLUMN_NAME") + "\t" + rs.getString("TYPE_NAME")
                            + "\t" + rs.getInt("DATA_TYPE") + "\t" + rs.getString("IS_NULLABLE"));
                }
            }
            // What Metabase, DBeaver and Tableau ask next when they sync a table.
            try (ResultSet rs = meta.getPrimaryKeys(null, "main", "window_stats")) {
                while (rs.next()) {
                    System.out.println("primary_key\t" + rs.getString("COLUMN_NAME") + "\t" + rs.getShort("KEY_SEQ")
                            + "\t" + rs.getString("PK_NAME"));
                }
            }
            try (ResultSet rs = meta.getIndexInfo(null, "main", "window_stats", false, true)) {
                while (rs.next()) {
                    System.out.println("index\t" + rs.getString("INDEX_NAME") + "\t" + rs.getString("COLUMN_NAME")
                            + "\t" + rs.getShort("ORDINAL_POSITION") + "\t" + rs.getBoolean("NON_UNIQUE"));
                }
            }
            try (ResultSet rs = meta.getTypeInfo()) {
                while (rs.next()) {
                    System.out.println("type_info\t" + rs.getString("TYPE_NAME") + "\t" + rs.getInt("DATA_TYPE"));
                }
            }
            String sql = "SELECT window_start, sensor_id, avg_value, reading_count FROM window_stats "
                    + "WHERE window_start >= ? AND window_start < ? AND sensor_id = ? ORDER BY window_start";
            // Run it more than prepareThreshold (5) times: the driver switches to a named server-side
            // statement and binary results then, a second code path on our side.
            for (int round = 0; round < 7; round++) {
                try (PreparedStatement ps = conn.prepareStatement(sql)) {
                    ps.setTimestamp(1, Timestamp.from(Instant.parse(args[3])));
                    ps.setObject(2, OffsetDateTime.parse(args[4]));
                    ps.setString(3, args[5]);
                    try (ResultSet rs = ps.executeQuery()) {
                        ResultSetMetaData md = rs.getMetaData();
                        int rows = 0;
                        String first = "";
                        while (rs.next()) {
                            if (rows == 0) {
                                first = rs.getObject(1, OffsetDateTime.class) + "\t" + rs.getString(2) + "\t"
                                        + rs.getDouble(3) + "\t" + rs.getLong(4);
                            }
                            rows++;
                        }
                        System.out.println("range\t" + round + "\t" + rows + "\t" + md.getColumnTypeName(1) + "\t" + first);
                    }
                }
            }
        }
    }
}
