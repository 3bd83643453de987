from sensorstream.cli import app

app()
