"""The local KRaft broker: start, status, stop, restart keeps data, clear errors."""

import pytest
from confluent_kafka import Consumer, Producer

from sensorstream.kafka.broker import BrokerError, LocalKafka
from sensorstream.kafka.topics import create_topic

pytestmark = pytest.mark.integration


def test_shared_broker_answers_and_creates_topics(kafka, topic):
    assert create_topic({"bootstrap.servers": kafka.bootstrap_servers}, topic, 3) is True
    assert create_topic({"bootstrap.servers": kafka.bootstrap_servers}, topic, 3) is False  # idempotent
    status = kafka.status()
    assert status["answering"] and status["topics"][topic] == 3


def test_second_broker_on_a_busy_port_says_what_to_do(kafka, tmp_path):
    with pytest.raises(
        BrokerError, match=r"port \d+ on 127.0.0.1 is already in use.*sensorstream kafka stop"
    ):
        LocalKafka(tmp_path / "other", port=kafka.port, cache_dir=kafka.cache_dir).start()


@pytest.mark.slow
def test_stop_and_restart_keeps_data(tmp_path, kafka):
    own = LocalKafka(tmp_path / "k", port=kafka.port + 100, cache_dir=kafka.cache_dir)
    own.start()
    try:
        conf = {"bootstrap.servers": own.bootstrap_servers}
        create_topic(conf, "keep", 1)
        p = Producer(conf)
        for i in range(10):
            p.produce("keep", key=b"k", value=str(i).encode())
        assert p.flush(10) == 0
        pids = [n["pid"] for n in own.status()["nodes"]]
        assert own.stop() == pids
        assert not own.status()["answering"] and all(n.pid() is None for n in own.nodes)
        own.start()
        c = Consumer({**conf, "group.id": "g", "auto.offset.reset": "earliest"})
        c.subscribe(["keep"])
        got = []
        for _ in range(60):
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                got.append(msg.value().decode())
            if len(got) == 10:
                break
        c.close()
        assert got == [str(i) for i in range(10)]
    finally:
        own.stop()


def test_missing_java_gets_a_sentence(monkeypatch):
    from sensorstream.jvm.classpath import JavaMissingError, java_binary

    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(JavaMissingError, match="Install a JDK"):
        java_binary()
