/*! signalgate event-id shim; docs: static_js/README.md */
!function(w,d){'use strict';
// vendor: [command, params index, options index, id key]; ttq.track(n,p,o) is checked as ['track',n,p,o]
var V={fbq:[/^track(Custom)?$/,2,3,'eventID'],gtag:[/^event$/,2,2,'event_id'],
snaptr:[/^track$/,2,2,'client_dedup_id']},TT=[/^track$/,2,3,'event_id'],
P=new WeakSet,n=0,t,hook,
O=o=>o&&typeof o=='object'?o:{},
rid=()=>{try{return crypto.randomUUID()}catch(e){return Date.now().toString(36)+Math.random().toString(36).slice(2)}},
id=p=>{var v=O(p).order_id;v=v!=null&&v!==''?v:O(p).transaction_id;return v!=null&&v!==''?String(v):rid()},
ar=function(){return arguments},
// the fixed copy of a call's arguments, or nothing when it needs no id
fx=(s,a)=>{var b=[].slice.call(a),p=b[s[1]],o=b[s[2]];
  if(s[0].test(b[0])&&O(o)[s[3]]==null){
    b[s[1]]=O(p);b[s[2]]=Object.assign({},O(o),{[s[3]]:id(p)});return b}},
// queued calls (fbq.queue, snaptr.queue, dataLayer, ttq): same kind of entry, fixed
qf=(q,s)=>Array.isArray(q)&&q.forEach((a,i)=>{try{var b=fx(s,a);
  if(b)q[i]=Array.isArray(a)?b:ar.apply(0,b)}catch(e){}}),
wrap=(f,s,m)=>{var x=new Proxy(f,{apply:(g,th,a)=>{var b;
  try{b=fx(s,m?[m].concat([].slice.call(a)):a);b=b&&m?b.slice(1):b}catch(e){}
  return Reflect.apply(g,th,b||a)}});P.add(x);return x},
chk=()=>{var k,f;
  for(k in V)try{f=w[k];if(typeof f=='function'&&!P.has(f)){
    qf(f.queue,V[k]);k=='gtag'&&qf(w.dataLayer,V[k]);w[k]=wrap(f,V[k])}}catch(e){}
  try{f=w.ttq;if(f&&typeof f.track=='function'&&!P.has(f.track)){qf(f,TT);f.track=wrap(f.track,TT,'track')}}catch(e){}};
// a vendor global assigned after the shim (fbq / snaptr base code) is wrapped on assignment,
// before the vendor script can drain its queue (it may run before DOMContentLoaded)
hook=k=>{var c;if(w[k]===void 0)try{Object.defineProperty(w,k,{configurable:!0,enumerable:!0,
  get:()=>c,set:f=>{c=typeof f=='function'&&!P.has(f)?(qf(f.queue,V[k]),wrap(f,V[k])):f}})}catch(e){}};
try{
  hook('fbq');hook('snaptr');
  chk();
  d.addEventListener('DOMContentLoaded',chk);
  w.addEventListener('load',chk);
  t=setInterval(()=>{chk();++n>39&&clearInterval(t)},250);
}catch(e){}
}(window,document);
