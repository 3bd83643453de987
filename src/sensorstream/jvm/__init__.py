"""The JVM side: which `java` runs, and the jars on its classpath (Maven Central, cached once)."""
