// JdbcFetch: pgJDBC's paging and cancelling against the sensorstream endpoint, as a report tool or
// an ETL job reads a large answer. Run as a single-file program:
//   java -cp <driver jars> JdbcFetch.java URL USER PASSWORD FETCH_SIZE SLOW_SQL
// With autocommit off and a fetch size, the driver binds a named portal and Executes it with that
// row count, once per page (PortalSuspended in between); setQueryTimeout sends a CancelRequest.
// Prints one line per fact ("key<TAB>value"); the Python test reads and checks them.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class JdbcFetch {
    public static void main(String[] args) throws Exception {
        int fetchSize = Integer.parseInt(args[3]);
        try (Connection conn = DriverManager.getConnection(args[0], args[1], args[2])) {
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.setFetchSize(fetchSize);
                long sum = 0;
                int rows = 0;
                try (ResultSet rs = st.executeQuery("SELECT id FROM samples ORDER BY id")) {
                    while (rs.next()) {
                        sum += rs.getLong(1);
                        rows++;
                    }
                }
                System.out.println("paged\t" + rows + "\t" + sum);
            }
            conn.commit();
            try (Statement st = conn.createStatement()) {
                st.setQueryTimeout(1);
                long started = System.nanoTime();
                try (ResultSet rs = st.executeQuery(args[4])) {
                    System.out.println("timeout\tnone");
                } catch (SQLException e) {
                    long ms = (System.nanoTime() - started) / 1_000_000;
                    System.out.println("timeout\t" + e.getSQLState() + "\t" + ms + "\t" + e.getMessage());
                }
            }
            conn.rollback();
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM samples")) {
                rs.next();
                System.out.println("after\t" + rs.getLong(1));
            }
        }
    }
}
