import { mount } from 'svelte';
import '../lib/base.css';
import Frame from './Frame.svelte';

mount(Frame, { target: document.getElementById('app')! });
